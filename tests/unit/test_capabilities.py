"""The tool executor's capability check, at the level of its core (`ToolExecutor`) with a real
SQLite bank behind the built-in `transfer_funds` and an injected clock: only an unexpired
authorization that the policy gate signed for exactly this call runs, and anything else leaves the
bank untouched. The same properties end to end (through the journal) are in tests/test_approvals.py."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from agentstream import ids
from agentstream.events import ToolCallAuthorized, ToolCallCompleted, ToolSwitched
from agentstream.processors.tool_executor.app import builtin_entry
from agentstream.processors.tool_executor.builtin import BuiltinToolHost, bank_transfers
from agentstream.processors.tool_executor.execute import ToolExecutor
from agentstream.processors.tool_executor.registry_host import RegistryToolHost
from agentstream.registry.catalog import ToolCatalog
from agentstream.registry.entry import switch_key
from agentstream.security.signing import Signer, capability_problem, capability_verifies, sign_capability

NOW_MS = 1_700_000_000_000
TTL_MS = 300_000
ARGS = json.dumps({"to_account": "ACC-9", "amount_cents": 500, "memo": "capability test"})


@dataclass
class Rig:
    executor: ToolExecutor
    catalog: ToolCatalog
    signer: Signer
    bank: Path
    clock: list[int]  # the executor's clock reads clock[0], so a test can move time

    def authorization(self, call: str = "c0", **changes: Any) -> ToolCallAuthorized:
        """An authorization signed as the policy gate signs it, then (if asked) altered."""
        call_id = ids.tool_call_id("run_cap", 1, int(call.removeprefix("c")))
        unsigned = ToolCallAuthorized(
            ids.authorized_id(call_id), "run_cap", "acme", 1, call_id, call, "transfer_funds", "1", ARGS, call_id,
            30_000, "policy", NOW_MS + TTL_MS, "", "",
        )  # fmt: skip
        signed = replace(unsigned, capability=sign_capability(self.signer, unsigned))
        return replace(signed, **changes) if changes else signed

    async def perform(self, request: ToolCallAuthorized) -> ToolCallCompleted:
        (completed,) = await self.executor.perform(request)
        assert isinstance(completed, ToolCallCompleted)
        return completed

    def transfers(self) -> list[dict[str, Any]]:
        return bank_transfers(self.bank)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    builtin = BuiltinToolHost(tmp_path / "bank.sqlite")
    catalog = ToolCatalog()
    for descriptor in builtin.descriptors():
        catalog.apply(builtin_entry(descriptor).to_event())
    signer = Signer(b"k" * 32)
    clock = [NOW_MS]
    host = RegistryToolHost(builtin)
    executor = ToolExecutor(host, catalog, signer, None, lambda: clock[0])
    try:
        yield Rig(executor, catalog, signer, tmp_path / "bank.sqlite", clock)
    finally:
        await host.aclose()


async def test_a_genuine_unexpired_capability_runs_once_up_to_its_last_millisecond(rig: Rig) -> None:
    request = rig.authorization()
    assert rig.executor.admits(request)
    rig.clock[0] = request.expires_ms  # the last instant it is valid
    completed = await rig.perform(request)
    assert not completed.is_error, completed.content
    assert [t["idempotency_key"] for t in rig.transfers()] == [request.idempotency_key]


@pytest.mark.parametrize("late_ms", [1, 1_000, TTL_MS * 10])
async def test_an_expired_capability_is_admitted_but_executes_nothing(rig: Rig, late_ms: int) -> None:
    """Admitted, so the ledger records the call and the run gets an observation instead of
    waiting forever; refused when it would run, because by then it has expired."""
    request = rig.authorization()
    assert rig.executor.admits(request)  # it verifies: the gate did issue it
    rig.clock[0] = request.expires_ms + late_ms
    completed = await rig.perform(request)
    assert completed.is_error and completed.content.startswith("NOT EXECUTED: transfer_funds: the capability expired")
    assert rig.transfers() == []
    assert capability_problem(rig.signer, request, request.expires_ms + late_ms) is not None


async def test_a_capability_that_expires_while_its_call_waits_executes_nothing(rig: Rig) -> None:
    """Valid when it entered the ledger (waiting there for its budget reservation, say), expired
    when its turn came: the expiry is checked at execution time, not at admission."""
    request = rig.authorization()
    assert rig.executor.admits(request) and capability_problem(rig.signer, request, rig.clock[0]) is None
    rig.clock[0] += TTL_MS + 1
    assert (await rig.perform(request)).is_error
    assert rig.transfers() == []


def _tampered() -> list[tuple[str, Callable[[ToolCallAuthorized], ToolCallAuthorized]]]:
    other_args = json.dumps({"to_account": "ATTACKER", "amount_cents": 500_000, "memo": "capability test"})
    reordered = json.dumps(json.loads(ARGS), sort_keys=True, separators=(",", ":"))  # same object, other bytes
    return [
        ("arguments", lambda a: replace(a, arguments_json=other_args)),
        ("argument bytes", lambda a: replace(a, arguments_json=reordered)),
        ("tool version", lambda a: replace(a, tool_version="2")),
        ("tool", lambda a: replace(a, tool="calculator")),
        ("run", lambda a: replace(a, run_id="run_other")),
        ("tenant", lambda a: replace(a, tenant_id="globex")),
        ("call", lambda a: replace(a, call_id=a.call_id + "x")),
        ("later expiry", lambda a: replace(a, expires_ms=a.expires_ms + TTL_MS)),
        ("authorizer", lambda a: replace(a, authorized_by="approval:api:acme:key/000000000000")),
        ("idempotency key", lambda a: replace(a, idempotency_key=a.idempotency_key + "-again")),
        ("timeout", lambda a: replace(a, timeout_ms=3_600_000)),
        ("no capability", lambda a: replace(a, capability="")),
        ("another key's capability", lambda a: replace(a, capability=sign_capability(Signer(b"x" * 32), a))),
    ]


@pytest.mark.parametrize(("what", "tamper"), _tampered(), ids=[name for name, _ in _tampered()])
async def test_an_altered_authorization_is_refused_and_executes_nothing(
    rig: Rig, what: str, tamper: Callable[[ToolCallAuthorized], ToolCallAuthorized]
) -> None:
    genuine = rig.authorization()
    altered = tamper(genuine)
    assert altered != genuine, what
    assert not capability_verifies(rig.signer, altered)
    refused_before = rig.executor.refused
    assert not rig.executor.admits(altered)  # never enters the ledger: it cannot take the call's slot
    assert rig.executor.refused == refused_before + 1
    # Even if it reached execution, it would not run.
    completed = await rig.perform(altered)
    assert completed.is_error and "does not verify" in completed.content
    assert rig.transfers() == []


async def test_a_genuine_capability_for_an_unregistered_version_executes_nothing(rig: Rig) -> None:
    """Signed for v7 (a gate that saw a version this executor's registry lacks): not run as v1."""
    unsigned = replace(rig.authorization(), tool_version="7", capability="")
    request = replace(unsigned, capability=sign_capability(rig.signer, unsigned))
    assert rig.executor.admits(request)
    completed = await rig.perform(request)
    assert completed.is_error and "v7 is not registered" in completed.content
    assert rig.transfers() == []


async def test_a_genuine_capability_for_a_switched_off_tool_executes_nothing(rig: Rig) -> None:
    entry = rig.catalog.latest("", "transfer_funds")
    assert entry is not None
    rig.catalog.apply(ToolSwitched(switch_key("", "transfer_funds"), "", "transfer_funds", True, "incident 7",
                                   "test", NOW_MS))  # fmt: skip
    completed = await rig.perform(rig.authorization())
    assert completed.is_error and "disabled by an operator: incident 7" in completed.content
    assert rig.transfers() == []


def test_the_capability_covers_every_field_that_shapes_the_side_effect() -> None:
    """Each field of an authorization either is under the signature (a change breaks it) or is
    named here as deliberately outside it, so a new field cannot slip in unbound."""
    signer = Signer(b"k" * 32)
    unsigned = ToolCallAuthorized("e", "run", "acme", 1, "call", "tc", "t", "1", "{}", "key", 1000, "policy", 5, "", "")
    signed = replace(unsigned, capability=sign_capability(signer, unsigned))
    # event_id: the journal's dedupe id; delegation: a token signed on its own, bound to this call;
    # step, tool_call_id, rule, reason: what the observation is filed under and why, none of which
    # changes what runs.
    outside = {"event_id", "delegation", "step", "tool_call_id", "rule", "reason"}
    for f in dataclasses.fields(ToolCallAuthorized):
        if f.name == "capability":  # the signature itself
            continue
        value = getattr(signed, f.name)
        new: Any = value + 1 if isinstance(value, int) else value + "x"
        changed = replace(signed, **{f.name: new})
        assert capability_verifies(signer, changed) == (f.name in outside), f.name
