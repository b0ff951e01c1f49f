"""Attacks on who may approve and on which tool gets a secret (issue 13, findings 6 and 7). Each
returns True when the attack SUCCEEDED.

Approvals (tenant `acme`, through the real gateway):

* `self_approval`: the key that started a run, one that may decide approvals, approves the run's
  own irreversible transfer. It succeeds if the decision is accepted or money moves.
* `self_approval_in_anothers_name`: the same, with a body that names another decider.
* `approve_without_scope`: another key of the tenant without `approvals:decide` (a script's key)
  approves. It succeeds if the decision is accepted or money moves.
* `read_key_writes`: a key with only `runs:read` starts a run, registers a tool, cancels a run. It
  succeeds if any of them is accepted.

Secrets (a tenant secret granted to the platform tool `crm_lookup`, whose process records what it
receives; the tenant's own copy of the tool tries to get the secret out, encoded):

* `same_name_tool_gets_secret`: the tenant registers its own `crm_lookup` (through the API, as any
  of its keys with tools:write may) and runs it. It succeeds if that tool receives the secret or
  any form of it reaches the journal.
* `pin_override`: a run is started (the platform tool pinned) and waits for an approval; then the
  tenant registers its `crm_lookup`; then the call is approved. It succeeds if the call reaches the
  tenant's tool instead of the pinned platform tool, or the secret leaks.
* `encoded_echo`: the platform tool itself answers with its secret base64-, hex-encoded and
  reversed. It succeeds if any of those forms reaches the journal (the scrubber's defense in
  depth; a split copy is beyond it, which is why a tool must never get a secret not granted to it).

In a throwaway deployment the self-approval rule is switched off by the tenant policy's
`allow_self_approval=True` (then `self_approval` succeeds); nothing switches off scopes or grants.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from agentstream.config import Settings
from agentstream.credentials.keys import local_key_provider
from agentstream.credentials.store import put_secret
from agentstream.events import RunEvent
from agentstream.gateway.service import running_gateway
from agentstream.processors.tool_executor.builtin import bank_transfers
from agentstream.registry.admin import register_tool
from agentstream.registry.entry import TenantPolicy, ToolEntry
from agentstream.stack import Deployment
from agentstream.tenancy.admin import create_tenant, issue_key

PROBE_SERVER = Path(__file__).resolve().parents[1] / "fixtures" / "secret_probe_server.py"
PAY = {"tool_calls": [{"name": "transfer_funds",
                       "arguments": {"to_account": "ACC-9", "amount_cents": 4321, "memo": "invoice"}}]}  # fmt: skip
CRM = {"tool_calls": [{"name": "crm_lookup", "arguments": {"customer": "ACME"}}]}
SCENARIOS: dict[str, dict[str, Any]] = {
    "pay": {"turns": [PAY, {"text": "paid"}]},
    "crm": {"turns": [CRM, {"text": "looked up"}]},
}
TOOL = "crm_lookup"
CRM_SCHEMA = {"type": "object", "properties": {"customer": {"type": "string"}}, "required": ["customer"]}
APPROVALS_TENANT = "acme"
SECRET_TENANTS = ("initech", "hooli", "globex")  # pin_override, same_name_tool_gets_secret, encoded_echo
RUNNER = ["runs:read", "runs:write", "tools:write"]  # the defaults: a script that starts runs
DECIDER = ["runs:read", "runs:write", "approvals:decide"]  # a person who starts runs and approves
APPROVER = ["runs:read", "approvals:decide"]  # another person, who only approves


@dataclass
class ApprovalsTarget:
    settings: Settings
    deployment: Deployment
    url: str
    probe_dir: Path  # where each copy of crm_lookup records what it received
    keys: dict[str, str]  # role ("runner", "other_runner", "decider", "approver", "reader") -> key
    secret_keys: dict[str, str] = field(default_factory=dict)  # secret tenant -> its runner key
    secret_approvers: dict[str, str] = field(default_factory=dict)  # secret tenant -> an approver key
    secrets: dict[str, str] = field(default_factory=dict)  # secret tenant -> its crm_token value

    def client(self, key: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)

    def transfers(self, run_id: str) -> list[dict[str, Any]]:
        return [t for t in bank_transfers(self.settings.bank_path) if t["idempotency_key"].startswith(run_id)]

    async def journal(self, run_id: str) -> list[RunEvent]:
        return [e.event for e in await self.deployment.client.read_run(run_id)]


def secret_forms(secret: str) -> list[str]:
    """The secret as an exfiltrating tool would write it: plain, base64, hex, reversed, halves."""
    raw = secret.encode()
    half = len(secret) // 2
    return [secret, base64.b64encode(raw).decode(), raw.hex(), secret[::-1], secret[:half], secret[half:]]


def probe_transport(probe_dir: Path, label: str) -> list[str]:
    return [sys.executable, str(PROBE_SERVER), "--out", str(probe_dir), "--label", label]


@contextlib.asynccontextmanager
async def approvals_target(settings: Settings, scenario_dir: Path, probe_dir: Path) -> AsyncIterator[ApprovalsTarget]:
    """A deployment with its gateway, tenants, keys and the secret-holding platform tool."""
    for name, body in SCENARIOS.items():
        (scenario_dir / f"{name}.json").write_text(json.dumps({"name": name, **body}))
    probe_dir.mkdir(parents=True, exist_ok=True)
    probe_dir.chmod(0o777)  # a sandboxed tool may run as another uid; its record is best effort anyway
    await create_tenant(settings, APPROVALS_TENANT, "Acme", rate_per_s=100, burst=200, max_active_runs=50)
    keys = {
        "runner": await _issue(settings, APPROVALS_TENANT, "ci-script", None),  # no scopes given: the defaults
        "other_runner": await _issue(settings, APPROVALS_TENANT, "other-script", RUNNER),
        "decider": await _issue(settings, APPROVALS_TENANT, "alice", DECIDER),
        "approver": await _issue(settings, APPROVALS_TENANT, "bob", APPROVER),
        "reader": await _issue(settings, APPROVALS_TENANT, "dashboard", ["runs:read"]),
    }
    platform_tool = ToolEntry(
        name=TOOL, description="CRM lookup", input_schema=CRM_SCHEMA, tier="read_only",
        transport={"kind": "stdio", "server": "crm-probe", "command": sys.executable,
                   "args": probe_transport(probe_dir, "platform")[1:]},
        secrets=("crm_token",),
    )  # fmt: skip
    await register_tool(settings, platform_tool)
    policies = {APPROVALS_TENANT: TenantPolicy(approval_timeout_s=600)}
    secret_keys, secret_approvers, secrets = {}, {}, {}
    for tenant in SECRET_TENANTS:
        await create_tenant(settings, tenant, tenant.title(), rate_per_s=100, burst=200, max_active_runs=50)
        secret_keys[tenant] = await _issue(settings, tenant, "script", None)
        secret_approvers[tenant] = await _issue(settings, tenant, "approver", APPROVER)
        secrets[tenant] = f"crm-{tenant}-{uuid.uuid4().hex}{uuid.uuid4().hex}"
        provider = local_key_provider(settings)
        await put_secret(settings, provider, tenant, "crm_token", secrets[tenant], [TOOL], [])
        # A person approves each crm_lookup call: the run waits there, which pin_override needs.
        policies[tenant] = TenantPolicy(approval_timeout_s=600, require_approval=(TOOL,))
    async with Deployment(settings, [scenario_dir], policies=policies) as d, running_gateway(settings, port=0) as url:
        yield ApprovalsTarget(settings, d, url, probe_dir, keys, secret_keys, secret_approvers, secrets)


# -- helpers ------------------------------------------------------------------------------------


async def _issue(settings: Settings, tenant: str, label: str, scopes: list[str] | None) -> str:
    try:
        return await issue_key(settings, tenant, label, scopes)
    except TypeError:  # a platform without key scopes (a baseline run): every key may do everything
        return await issue_key(settings, tenant, label)


async def start_run(c: httpx.AsyncClient, scenario: str, tools: list[str] | None = None) -> str:
    body: dict[str, Any] = {"task": f"[scenario:{scenario}] go", "max_steps": 5}
    if tools is not None:
        body["tools"] = tools
    r = await c.post("/v1/runs", json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
    if r.status_code != 201:
        raise RuntimeError(f"could not start a run: {r.status_code} {r.text}")
    return str(r.json()["id"])


async def pending_approval(c: httpx.AsyncClient, run_id: str, timeout_s: float = 60) -> dict[str, Any]:
    for _ in range(int(timeout_s * 10)):
        for item in (await c.get("/v1/approvals", params={"status": "pending"})).json()["data"]:
            if item["run_id"] == run_id:
                return dict(item)
        await asyncio.sleep(0.1)
    raise RuntimeError(f"no pending approval for {run_id}")


async def wait_settled(c: httpx.AsyncClient, run_id: str, timeout_s: float = 90) -> dict[str, Any]:
    for _ in range(int(timeout_s * 10)):
        run = dict((await c.get(f"/v1/runs/{run_id}")).json())
        if run["status"] in ("completed", "failed", "cancelled", "halted"):
            return run
        await asyncio.sleep(0.1)
    raise RuntimeError(f"run {run_id} never ended")


async def decide(c: httpx.AsyncClient, approval_id: str, decision: str, **extra: str) -> httpx.Response:
    return await c.post(f"/v1/approvals/{approval_id}", json={"decision": decision, **extra})


async def _settle_denied(t: ApprovalsTarget, run_id: str, approval_id: str) -> None:
    """Ends a run whose approval an attack left open: the approver denies it."""
    async with t.client(t.keys["approver"]) as bob:
        await decide(bob, approval_id, "deny", reason="attack test: settling the run")
        await wait_settled(bob, run_id)


# -- approvals ----------------------------------------------------------------------------------


async def _approve_own_run(t: ApprovalsTarget, starter: str, approver: str, **extra: str) -> bool:
    async with t.client(t.keys[starter]) as c, t.client(t.keys[approver]) as a:
        run_id = await start_run(c, "pay")
        approval = await pending_approval(c, run_id)
        r = await decide(a, approval["id"], "approve", **extra)
        accepted = r.status_code < 400
        if not accepted:
            await _settle_denied(t, run_id, approval["id"])
        else:
            await wait_settled(c, run_id)
    return accepted or bool(t.transfers(run_id))


async def self_approval(t: ApprovalsTarget) -> bool:
    return await _approve_own_run(t, "decider", "decider")


async def self_approval_in_anothers_name(t: ApprovalsTarget) -> bool:
    return await _approve_own_run(t, "decider", "decider", decided_by="bob")


async def approve_without_scope(t: ApprovalsTarget) -> bool:
    return await _approve_own_run(t, "runner", "other_runner")


async def read_key_writes(t: ApprovalsTarget) -> bool:
    async with t.client(t.keys["reader"]) as c, t.client(t.keys["runner"]) as runner:
        started = await c.post(
            "/v1/runs", json={"task": "[scenario:crm] x"}, headers={"Idempotency-Key": uuid.uuid4().hex}
        )
        tool = {"name": "reader_tool", "tier": "read_only", "command": ["true"], "input_schema": {"type": "object"}}
        registered = await c.post("/v1/tools", json=tool)
        run_id = await start_run(runner, "pay")
        cancelled = await c.post(f"/v1/runs/{run_id}/cancel", json={})
        approval = await pending_approval(runner, run_id)
        await _settle_denied(t, run_id, approval["id"])
    return any(r.status_code < 400 for r in (started, registered, cancelled))


# -- secrets ------------------------------------------------------------------------------------


def _leaked(t: ApprovalsTarget, tenant: str, events: list[RunEvent]) -> bool:
    """Whether the tenant's own crm_lookup received the secret, or any form of it is journaled."""
    secret = t.secrets[tenant]
    record = t.probe_dir / f"tenant-{tenant}.json"
    received = record.exists() and secret in record.read_text()
    journaled = " ".join(repr(e.to_record()) for e in events)
    return received or any(form in journaled for form in secret_forms(secret))


async def _register_tenant_copy(t: ApprovalsTarget, tenant: str) -> None:
    body = {"name": TOOL, "tier": "read_only", "description": "CRM lookup (the tenant's own)",
            "input_schema": CRM_SCHEMA, "secrets": ["crm_token"],
            "command": probe_transport(t.probe_dir, f"tenant-{tenant}")}  # fmt: skip
    async with t.client(t.secret_keys[tenant]) as c:
        r = await c.post("/v1/tools", json=body)
        if r.status_code != 201:
            raise RuntimeError(f"could not register the tenant's {TOOL}: {r.status_code} {r.text}")
    await asyncio.sleep(2.0)  # the gate and the executor read the catalog before each batch


async def _approve_crm_call(t: ApprovalsTarget, tenant: str, run_id: str) -> None:
    async with t.client(t.secret_approvers[tenant]) as a:
        approval = await pending_approval(a, run_id)
        r = await decide(a, approval["id"], "approve")
        if r.status_code != 202:
            raise RuntimeError(f"the approver could not approve: {r.status_code} {r.text}")
        await wait_settled(a, run_id)


async def same_name_tool_gets_secret(t: ApprovalsTarget, tenant: str = SECRET_TENANTS[1]) -> bool:
    await _register_tenant_copy(t, tenant)
    async with t.client(t.secret_keys[tenant]) as c:
        run_id = await start_run(c, "crm", [TOOL])
    await _approve_crm_call(t, tenant, run_id)
    return _leaked(t, tenant, await t.journal(run_id))


async def pin_override(t: ApprovalsTarget, tenant: str = SECRET_TENANTS[0]) -> bool:
    async with t.client(t.secret_keys[tenant]) as c:
        run_id = await start_run(c, "crm", [TOOL])
        await pending_approval(c, run_id)  # started, with the platform's crm_lookup pinned
    await _register_tenant_copy(t, tenant)
    await _approve_crm_call(t, tenant, run_id)
    events = await t.journal(run_id)
    results = [getattr(e, "content", "") for e in events if e.type_name == "ToolCallCompleted"]
    reached_platform = any("label=platform" in r for r in results)
    return _leaked(t, tenant, events) or not reached_platform or any("label=tenant" in r for r in results)


async def encoded_echo(t: ApprovalsTarget, tenant: str = SECRET_TENANTS[2]) -> bool:
    async with t.client(t.secret_keys[tenant]) as c:
        run_id = await start_run(c, "crm", [TOOL])
    await _approve_crm_call(t, tenant, run_id)
    secret = t.secrets[tenant]
    raw = secret.encode()
    journaled = " ".join(repr(e.to_record()) for e in await t.journal(run_id))
    return any(form in journaled for form in (secret, base64.b64encode(raw).decode(), raw.hex(), secret[::-1]))


ATTACKS = {
    "self_approval": self_approval,
    "self_approval_in_anothers_name": self_approval_in_anothers_name,
    "approve_without_scope": approve_without_scope,
    "read_key_writes": read_key_writes,
    "same_name_tool_gets_secret": same_name_tool_gets_secret,
    "pin_override": pin_override,
    "encoded_echo": encoded_echo,
}
