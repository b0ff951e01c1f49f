"""Forged journal events (issue 13, finding 4). Each attack returns True when it SUCCEEDED.

The attacker can write to `runs.journal` (a principal the broker lets write it: the operator's
settings here, so the broker never stands in the way), and produces events that would change
what a run may do: unsigned, signed by a writer not allowed to write the type, signed with a
processor's key but without the run-request proof, or a genuine record altered. The platform must
ignore every one (dead-letter it with the reason) and nothing may change: no run starts, no tool
runs, no budget is released, no run ends, nothing forged shows in the gateway's projection (and,
in trust_dispatch.py, no request reaches a URL outside the replica pool).

The stage (`trust_stage`) is a whole local deployment with two tenants' runs in flight: `acme`'s
run waits for a person's approval of a transfer, `payco` may pay without one.

Switch: `AGENTSTREAM_JOURNAL_AUTH=0` in the processors' environment turns the writer checks off
(`trust_stage(..., checks=False)`), and then the forgeries take effect (the control run).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

from confluent_kafka import Producer

from agentstream import ids
from agentstream.client.journal import JournalClient, RunRequest
from agentstream.codec import AvroCodec
from agentstream.config import Settings
from agentstream.credentials.signing_keys import bundle_path, component_keyring, load_keyring
from agentstream.events import (
    ApprovalDecided,
    ApprovalRequested,
    BudgetExceeded,
    BudgetReserved,
    CancelRequested,
    RunCompleted,
    RunEvent,
    RunRequested,
    ToolCallAuthorized,
    ToolCallCompleted,
    ToolCallRequested,
)
from agentstream.kafka.journal import TYPE_HEADER, header_pairs
from agentstream.kafka.partitioner import partition_for
from agentstream.kafka.producer import producer_config
from agentstream.processors.tool_executor.builtin import bank_transfers
from agentstream.registry.admin import read_catalog
from agentstream.registry.entry import TenantPolicy
from agentstream.security.journal_trust import RUN_PROOF_HEADER, JournalSigner
from agentstream.security.signing import platform_signers, sign_capability, signed_decision
from agentstream.stack import PAYMENTS_AUTO_APPROVED, Deployment
from agentstream.topics import DEADLETTER, JOURNAL, load_topics

PAY = {"tool_calls": [{"name": "transfer_funds",
                       "arguments": {"to_account": "ACC-7", "amount_cents": 777, "memo": "rent"}}]}  # fmt: skip
SCENARIOS = {"pay": {"turns": [PAY, {"text": "done"}]}}
SETTLE_S = 4.0  # how long a forgery gets to take effect


@dataclass
class TrustStage:
    client: JournalClient  # the operator's client (it holds every key; its reads are writer-checked)
    settings: Settings
    # acme's run, waiting for an approval of its transfer, and what it waits for (None: no such run)
    asked_: ApprovalRequested | None = None
    checks: bool = True  # False: the control deployment, writer checks off

    @property
    def asked(self) -> ApprovalRequested:
        if self.asked_ is None:
            raise RuntimeError("this stage has no run waiting for an approval")
        return self.asked_

    @property
    def journal(self) -> str:
        return load_topics(self.settings.topic_prefix)[JOURNAL].name

    @property
    def partitions(self) -> int:
        return load_topics(self.settings.topic_prefix)[JOURNAL].partitions

    def transfers(self, prefix: str) -> list[str]:
        return [t["idempotency_key"] for t in bank_transfers(self.settings.bank_path)
                if str(t["idempotency_key"]).startswith(prefix)]  # fmt: skip

    async def genuine(self, run_id: str) -> list[RunEvent]:
        """The run's events as the platform's readers see them (writer-checked)."""
        return [e.event for e in await self.client.read_run(run_id)]

    def produce(self, event: RunEvent, *, writer: str | None, keys: str = "admin", key: bytes | None = None,
                extra: list[tuple[str, bytes]] | None = None, value: bytes | None = None) -> bytes:  # fmt: skip
        """Writes `event` as an attacker able to write the journal: signed as `writer` with the key
        material of `keys` (a component's bundle, or "admin"), or unsigned when `writer` is None."""
        body = AvroCodec().encode(event) if value is None else value
        record_key = key or f"{event.event_id}#forged-{uuid.uuid4().hex[:6]}".encode()
        headers: list[tuple[str, str | bytes | None]] = [(TYPE_HEADER, event.type_name.encode())]
        if writer is not None:
            ring = component_keyring(self.settings, "admin") if keys == "admin" else load_keyring(
                bundle_path(self.settings, keys))  # fmt: skip
            headers += JournalSigner(writer, ring).headers(self.journal, record_key, event.type_name, body)
        headers += extra or []
        producer = Producer(producer_config(self.settings.bootstrap_servers, self.settings.kafka_extra))
        producer.produce(self.journal, value=body, key=record_key, headers=headers,
                         partition=partition_for(event.run_id, self.partitions))  # fmt: skip
        if producer.flush(10) != 0:
            raise RuntimeError("the forged record was not acknowledged")
        return record_key

    async def dead_letter_reasons(self) -> dict[bytes, str]:
        topic = load_topics(self.settings.topic_prefix)[DEADLETTER].name
        return await asyncio.to_thread(_read_reasons, self.settings, topic)


def _read_reasons(settings: Settings, topic: str) -> dict[bytes, str]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from agentstream.kafka.consumer import consumer_config, watermarks

    consumer = Consumer(consumer_config(settings.bootstrap_servers, settings.kafka_extra, {"group.id": "trust"}))
    try:
        tp = TopicPartition(topic, 0, OFFSET_BEGINNING)
        _low, high = watermarks(consumer, tp)
        consumer.assign([tp])
        reasons: dict[bytes, str] = {}
        deadline = time.monotonic() + 15
        while high and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.2):
                if msg.error() is None:
                    headers = dict(header_pairs(msg))
                    reasons.setdefault(msg.key() or b"", headers.get("reason", b"").decode())
                    if (msg.offset() or 0) + 1 >= high:
                        return reasons
        return reasons
    finally:
        consumer.close()


@contextlib.asynccontextmanager
async def trust_stage(settings: Settings, scenario_dir: Path, *, checks: bool = True) -> AsyncIterator[TrustStage]:
    for name, body in SCENARIOS.items():
        (scenario_dir / f"{name}.json").write_text(json.dumps({"name": name, **body}))
    policies = {"acme": TenantPolicy(approval_timeout_s=900, allow_self_approval=True), "payco": PAYMENTS_AUTO_APPROVED}
    env = {} if checks else {"AGENTSTREAM_JOURNAL_AUTH": "0"}
    async with Deployment(settings, [scenario_dir], policies=policies, extra_env=env) as d:
        run_id = await d.client.request_run(RunRequest("[scenario:pay] pay the rent", tenant_id="acme",
                                                       tools=["transfer_funds"]))  # fmt: skip
        asked = None
        async for entry in d.client.follow(run_id, 60, until=lambda e: isinstance(e, ApprovalRequested)):
            asked = entry.event
        assert isinstance(asked, ApprovalRequested)
        yield TrustStage(d.client, settings, asked, checks)


async def _unchanged(
    stage: TrustStage, run_id: str, forge: Callable[[], Awaitable[object]], recorded: frozenset[str] = frozenset()
) -> bool:
    """True (the attack succeeded) if the run's genuine events change after `forge`, beyond the
    forged events of the `recorded` types that an allowed writer put on the record (and that the
    platform then judged by their own signature)."""

    async def effects() -> list[str]:
        return [e.event_id for e in await stage.genuine(run_id) if e.type_name not in recorded]

    before = await effects()
    await forge()
    await asyncio.sleep(SETTLE_S)
    return await effects() != before


# -- RunRequested: start a run as another tenant (their tools, secrets and bill) ---------------------


def _victim_run(tenant: str = "victim") -> RunRequested:
    run_id = f"run_forged{uuid.uuid4().hex[:12]}"
    return RunRequested(ids.run_requested_id(run_id), run_id, tenant, task="[scenario:pay] pay me", model="scripted",
                        tools=["transfer_funds"], max_steps=5, idempotency_key=run_id)  # fmt: skip


async def _run_started(stage: TrustStage, run: RunRequested) -> bool:
    await asyncio.sleep(SETTLE_S)
    # Read raw (not writer-checked): did any processor act on the forgery at all?
    raw = JournalClient(stage.settings, writer=None)
    try:
        events = [e.event.type_name for e in await raw.read_run(run.run_id)]
    finally:
        await raw.aclose()
    return any(t != "RunRequested" for t in events) or bool(stage.transfers(run.run_id))


async def run_request_unsigned(stage: TrustStage) -> bool:
    run = _victim_run()
    stage.produce(run, writer=None)
    return await _run_started(stage, run)


async def run_request_wrong_writer(stage: TrustStage) -> bool:
    """Signed, with a processor's own key, by a processor that may not request runs."""
    run = _victim_run()
    stage.produce(run, writer="model-invoker", keys="model-invoker")
    return await _run_started(stage, run)


async def run_request_gateway_signature_without_proof(stage: TrustStage) -> bool:
    """A processor holds the gateway's journal key (to check the gateway's records): it signs a
    RunRequested as the gateway, but cannot make the run-request proof."""
    run = _victim_run()
    stage.produce(run, writer="gateway", keys="cost-governor")
    return await _run_started(stage, run)


async def run_request_borrowed_proof(stage: TrustStage) -> bool:
    """The run-request proof of a genuine request (the attacker's own tenant) on a forged one."""
    own = _victim_run("attacker")
    signer = JournalSigner("gateway", component_keyring(stage.settings, "admin"))
    proof = signer.run_proof(own.tenant_id, own.run_id, AvroCodec().encode(own))
    run = replace(_victim_run(), run_id=own.run_id, event_id=own.event_id)
    stage.produce(run, writer="gateway", keys="cost-governor", extra=[proof])
    return await _run_started(stage, run)


async def run_request_altered(stage: TrustStage) -> bool:
    """A correctly signed RunRequested for the attacker's tenant, its body then changed to the victim."""
    own = _victim_run("attacker")
    gateway = JournalSigner("gateway", component_keyring(stage.settings, "admin"))
    value = AvroCodec().encode(own)
    key = own.event_id.encode()
    headers = gateway.headers(stage.journal, key, "RunRequested", value)
    headers.append(gateway.run_proof(own.tenant_id, own.run_id, value))
    forged = replace(own, tenant_id="victim")
    assert RUN_PROOF_HEADER in dict(headers)
    stage.produce(forged, writer=None, key=key, extra=headers)
    return await _run_started(stage, forged)


# -- events that move a waiting run or release a side effect -----------------------------------------


async def tool_result_forged(stage: TrustStage) -> bool:
    """A result for the transfer that waits for approval: the run would go on as if it had run."""
    a = stage.asked
    done = ToolCallCompleted(ids.completed_event_id(a.call_id), a.run_id, a.tenant_id, step=a.step, call_id=a.call_id,
                             tool="transfer_funds", idempotency_key=a.call_id, content="sent", is_error=False,
                             duration_ms=1.0)  # fmt: skip

    async def forge() -> None:
        stage.produce(done, writer=None)
        stage.produce(done, writer="model-invoker", keys="model-invoker")

    return await _unchanged(stage, a.run_id, forge)


async def approval_wrong_writer(stage: TrustStage) -> bool:
    """A decision with a valid approval signature, written by a component that may not decide
    (and one unsigned): the transfer would run."""
    a = stage.asked
    decision = signed_decision(platform_signers(stage.settings).approval, run_id=a.run_id, tenant_id=a.tenant_id,
                               call_id=a.call_id, approval_id=a.approval_id, approved=True, decided_by="mallory",
                               reason="forged", decided_ms=int(time.time() * 1000))  # fmt: skip

    async def forge() -> None:
        stage.produce(decision, writer="tool-executor", keys="tool-executor")
        stage.produce(decision, writer=None)

    changed = await _unchanged(stage, a.run_id, forge)
    return changed or bool(stage.transfers(a.run_id))


async def approval_bad_signature(stage: TrustStage) -> bool:
    """Written by an allowed writer (the operator's client) but its approval signature is made up."""
    a = stage.asked
    forged = ApprovalDecided(ids.approval_decided_id(a.call_id, by_timeout=False), a.run_id, a.tenant_id, a.call_id, a.approval_id,
                             True, "mallory", "trust me", 1, "k0:" + "00" * 32)  # fmt: skip
    changed = await _unchanged(stage, a.run_id, lambda: stage.client.append(forged), frozenset({"ApprovalDecided"}))
    return changed or bool(stage.transfers(a.run_id))


async def waiting_run(stage: TrustStage) -> ApprovalRequested:
    """A fresh acme run, waiting for a person to approve its transfer."""
    run_id = await stage.client.request_run(RunRequest("[scenario:pay] pay the rent", tenant_id="acme",
                                                       tools=["transfer_funds"]))  # fmt: skip
    async for entry in stage.client.follow(run_id, 90, until=lambda e: isinstance(e, ApprovalRequested)):
        if isinstance(entry.event, ApprovalRequested):
            return entry.event
    raise TimeoutError(f"run {run_id} never asked for an approval")


async def completes_when_approved(stage: TrustStage, asked: ApprovalRequested) -> bool:
    """Approves the call genuinely (the operator's signed decision) and says whether the run then
    pays and completes, as a run nobody tampered with does."""
    decision = signed_decision(platform_signers(stage.settings).approval, run_id=asked.run_id, tenant_id=asked.tenant_id,
                               call_id=asked.call_id, approval_id=asked.approval_id, approved=True, decided_by="alice",
                               reason="ok", decided_ms=int(time.time() * 1000))  # fmt: skip
    await stage.client.append(decision)
    with contextlib.suppress(TimeoutError):
        async for entry in stage.client.follow(asked.run_id, 60):
            if isinstance(entry.event, RunCompleted):
                return bool(stage.transfers(asked.run_id))
    return False


async def run_ended_forged(stage: TrustStage) -> bool:
    """Terminal, cancel and budget events for a waiting run, unsigned or from the wrong writer. It
    succeeds if the run changes, or no longer pays and completes once genuinely approved."""
    a = await waiting_run(stage)
    ended = RunCompleted(ids.terminal_id(a.run_id), a.run_id, a.tenant_id, steps=a.step, final_answer="forged",
                         reason="forged")  # fmt: skip
    exceeded = BudgetExceeded(f"{a.run_id}/budget-exceeded/forged", a.run_id, a.tenant_id, step=a.step,
                              call_id=a.call_id, kind="tool", limit="budget_usd", reason="forged", resumable=False,
                              evidence_json="{}", decided_ms=int(time.time() * 1000))  # fmt: skip
    events: list[tuple[RunEvent, str | None]] = [
        (ended, None),
        (CancelRequested(ids.cancel_requested_id(a.run_id), a.run_id, a.tenant_id, "forged", "mallory"), None),
        (CancelRequested(ids.cancel_requested_id(a.run_id), a.run_id, a.tenant_id, "forged", "x"), "tool-executor"),
        (exceeded, "model-invoker"),
    ]

    async def forge() -> None:
        for event, writer in events:
            stage.produce(event, writer=writer, keys=writer or "admin")

    changed = await _unchanged(stage, a.run_id, forge)
    return changed or not await completes_when_approved(stage, a)


async def _authorization(stage: TrustStage, run_id: str, tenant: str) -> tuple[ToolCallAuthorized, BudgetReserved]:
    """An authorization with a valid capability and its reservation, as the gate and the governor
    would write them (the attacker gets to choose only who appears to write them)."""
    latest = (await read_catalog(stage.settings)).latest("", "transfer_funds")
    assert latest is not None
    call_id, now = ids.tool_call_id(run_id, 1, 0), int(time.time() * 1000)
    args = json.dumps({"to_account": "EVIL", "amount_cents": 999_999, "memo": "forged"})
    unsigned = ToolCallAuthorized(ids.authorized_id(call_id), run_id, tenant, 1, call_id, "c0", "transfer_funds",
                                  latest.version, args, call_id, 30_000, "policy", now + 300_000, "", "")  # fmt: skip
    authorized = replace(unsigned, capability=sign_capability(platform_signers(stage.settings).capability, unsigned))
    reserved = BudgetReserved(f"{call_id}/reserved", run_id, tenant, 1, call_id, "tool", "transfer_funds", 0.0, 0,
                              0.0, 0.0, "v", now)  # fmt: skip
    return authorized, reserved


async def budget_reserved_forged(stage: TrustStage) -> bool:
    """A genuine authorization the cost governor never reserved, released by a forged reservation."""
    run_id = f"run_forgedbudget{uuid.uuid4().hex[:8]}"
    authorized, reserved = await _authorization(stage, run_id, "payco")
    stage.produce(authorized, writer="policy-gate", keys="policy-gate")
    stage.produce(reserved, writer=None)
    stage.produce(reserved, writer="tool-executor", keys="tool-executor")
    await asyncio.sleep(SETTLE_S)
    return bool(stage.transfers(run_id))


async def authorization_wrong_writer(stage: TrustStage) -> bool:
    """A valid capability and a genuine reservation, the authorization written by the operator's
    client (not the policy gate): the capability alone would have let it run."""
    run_id = f"run_forgedauth{uuid.uuid4().hex[:8]}"
    authorized, reserved = await _authorization(stage, run_id, "payco")
    stage.produce(reserved, writer="cost-governor", keys="cost-governor")
    await stage.client.append(authorized)  # signed as "admin"
    stage.produce(authorized, writer=None, key=b"unsigned-" + authorized.event_id.encode())
    await asyncio.sleep(SETTLE_S)
    return bool(stage.transfers(run_id))


async def tool_request_forged(stage: TrustStage) -> bool:
    """A second transfer request in the waiting run, as if its model had asked: the gate would
    judge it (and ask a person, or pay). It succeeds if the run changes or money moves."""
    a = stage.asked
    call_id = ids.tool_call_id(a.run_id, a.step, 7)
    args = json.dumps({"to_account": "EVIL", "amount_cents": 5000, "memo": "forged"})
    request = ToolCallRequested(ids.requested_event_id(call_id), a.run_id, a.tenant_id, step=a.step, call_id=call_id,
                                tool_call_id="c7", tool="transfer_funds", arguments_json=args, idempotency_key=call_id,
                                timeout_ms=30_000)  # fmt: skip

    async def forge() -> None:
        stage.produce(request, writer=None)
        stage.produce(request, writer="gateway", keys="gateway")

    changed = await _unchanged(stage, a.run_id, forge, frozenset({"ApprovalDecided"}))
    return changed or bool(stage.transfers(call_id))


async def projection_shows_forgeries(stage: TrustStage) -> bool:
    """The gateway's run projection (what tenants see through the API), fed forged records: a run
    for another tenant and an end of the waiting run, from a client with no key. It succeeds if the
    projection shows either."""
    from agentstream.gateway.projection import RunIndex
    from agentstream.gateway.service import projection_check
    from agentstream.security.journal_trust import ViewVerifier

    check = projection_check(ViewVerifier(component_keyring(stage.settings, "gateway"))) if stage.checks else None
    index = RunIndex(stage.settings, None, check)
    stop = asyncio.Event()
    task = asyncio.create_task(index.run(stop))
    try:
        await index.ready()
        a, run = stage.asked, _victim_run()
        stage.produce(run, writer=None)
        stage.produce(run, writer="gateway", keys="cost-governor")  # a processor's copy, no run proof
        ended = RunCompleted(ids.terminal_id(a.run_id), a.run_id, a.tenant_id, steps=a.step, final_answer="forged",
                             reason="forged")  # fmt: skip
        stage.produce(ended, writer=None)
        await asyncio.sleep(SETTLE_S)
        waiting = index.runs.get(a.run_id)
        if waiting is None:
            raise AssertionError("the projection must still show the genuine run")
        return run.run_id in index.runs or waiting.terminal
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


ATTACKS: dict[str, Callable[[TrustStage], Awaitable[bool]]] = {
    "run_request_unsigned": run_request_unsigned,
    "run_request_wrong_writer": run_request_wrong_writer,
    "run_request_gateway_signature_without_proof": run_request_gateway_signature_without_proof,
    "run_request_borrowed_proof": run_request_borrowed_proof,
    "run_request_altered": run_request_altered,
    "tool_result_forged": tool_result_forged,
    "approval_wrong_writer": approval_wrong_writer,
    "approval_bad_signature": approval_bad_signature,
    "run_ended_forged": run_ended_forged,
    "budget_reserved_forged": budget_reserved_forged,
    "authorization_wrong_writer": authorization_wrong_writer,
    "tool_request_forged": tool_request_forged,
    "projection_shows_forgeries": projection_shows_forgeries,
}
