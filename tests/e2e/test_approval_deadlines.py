"""Approval deadlines against the real broker, processors and gateway, the gateway here being its own
OS process as in a deployment: an unanswered approval is denied (never approved) when its deadline
passes while every process is dead and every local state store is gone, and a tool's registered
`approval_timeout_s` sets its calls' deadline, capped by the tenant's policy."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from agentstream.cli.main import parser
from agentstream.events import (
    ApprovalDecided,
    ApprovalRequested,
    LlmCallRequested,
    RunCompleted,
    RunStarted,
    ToolCallAuthorized,
    ToolCallCompleted,
)
from agentstream.localkafka import free_port
from agentstream.processors.tool_executor.builtin import bank_stats
from agentstream.registry.entry import TenantPolicy
from agentstream.stack import Deployment, ProcessorProcesses
from agentstream.tenancy.admin import create_tenant, issue_key
from tests.e2e.test_approvals import PAY, pending_approval, wait_status
from tests.harness import isolated_settings

DEADLINE_S = 5.0  # acme's: long enough to see the approval and kill everything before it passes
WIRE = {"tool_calls": [{"name": "wire_money", "arguments": {"to": "ACC-7"}}]}
SCENARIOS: dict[str, dict[str, Any]] = {
    "pay": {"turns": [PAY, {"text": "done"}]},
    "wire": {"turns": [WIRE, {"text": "done"}]},
}
# A tenant-owned MCP stdio tool (the reference time server stands in; no call of it ever runs).
WIRE_TOOL = {"name": "wire_money", "tier": "irreversible", "command": ["python3", "-m", "mcp_server_time"],
             "input_schema": {"type": "object", "properties": {"to": {"type": "string"}}}}  # fmt: skip


@dataclass
class Env:
    d: Deployment
    url: str
    port: int
    keys: dict[str, str]  # tenant -> API key

    @property
    def procs(self) -> ProcessorProcesses:
        assert self.d.procs is not None
        return self.d.procs

    def client(self, tenant: str) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.keys[tenant]}"}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=60)

    async def start_gateway(self) -> None:
        self.procs.start_gateway(port=self.port)
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as c:
            for _ in range(600):
                try:
                    if (await c.get("/healthz")).status_code == 200:
                        return  # it serves only once its projection has read the journal
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError("the gateway never came up")


@pytest.fixture(scope="module")
async def env(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    settings, scen = await isolated_settings(kafka_bootstrap, tmp_path_factory.mktemp("deadlines"), "dl", SCENARIOS)
    keys = {}
    for tenant in ("acme", "globex"):
        await create_tenant(settings, tenant, tenant.title(), rate_per_s=100, burst=200, max_active_runs=50)
        # approvals:decide: a late decision is answered 409 (already decided), not 403 (no scope).
        keys[tenant] = await issue_key(
            settings, tenant, "test", ["runs:read", "runs:write", "approvals:decide", "tools:write"]
        )
    # Nobody auto-approves: acme's deadline is short, globex's long (its tools bring their own).
    policies = {"acme": TenantPolicy(approval_timeout_s=DEADLINE_S), "globex": TenantPolicy(approval_timeout_s=600)}
    port = free_port()
    async with Deployment(settings, [scen], policies=policies) as d:
        e = Env(d, f"http://127.0.0.1:{port}", port, keys)
        await e.start_gateway()
        yield e


async def start_run(c: httpx.AsyncClient, scenario: str) -> str:
    r = await c.post("/v1/runs", json={"task": f"[scenario:{scenario}] go", "max_steps": 5},
                     headers={"Idempotency-Key": uuid.uuid4().hex})  # fmt: skip
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def test_an_approval_expires_while_everything_is_down_and_rebuilt_from_the_topics(env: Env) -> None:
    bank_before = bank_stats(env.d.settings.bank_path)
    async with env.client("acme") as c:
        run_id = await start_run(c, "pay")
        approval = await pending_approval(c, run_id)
        assert approval["expires_at_ms"] - approval["requested_at_ms"] == DEADLINE_S * 1000

    # Every process of the platform dies at once (the broker, the source of truth, stays; so does
    # the scripted model, which stands in for an outside provider), and so does all local state.
    for key in list(env.procs.procs):
        env.procs.kill(key, signal.SIGKILL)
    killed_ms = int(time.time() * 1000)
    assert killed_ms < approval["expires_at_ms"], "too slow to kill everything before the deadline"
    shutil.rmtree(env.d.settings.state_dir)
    # Nothing was decided before the crash, so whatever decides it is the rebuilt state.
    assert not any(isinstance(e.event, ApprovalDecided) for e in await env.d.client.read_run(run_id))

    await asyncio.sleep(max(0.0, approval["expires_at_ms"] / 1000 - time.time()) + 1.0)
    gate_log = env.d.settings.home / "logs" / "policy-gate-0.log"
    log_from = gate_log.stat().st_size
    env.procs.start_all()
    await env.start_gateway()

    async with env.client("acme") as c:
        run = await wait_status(c, run_id, ("completed", "failed"), timeout_s=120)
        assert run["status"] == "completed", run
        after = (await c.get(f"/v1/approvals/{approval['id']}")).json()
        assert after["status"] == "expired" and after["decided_by"] == "timeout", after
        assert after["decided_at_ms"] >= approval["expires_at_ms"]
        late = await c.post(f"/v1/approvals/{approval['id']}", json={"decision": "approve"})
        assert late.status_code == 409
    # The gate had no store to go on: it restored it from its changelog topic and the journal.
    assert re.search(r"restored [1-9]\d* stores from 1 changelog topics", gate_log.read_text()[log_from:])

    events = [e.event for e in await env.d.client.read_run(run_id)]
    decisions = [e for e in events if isinstance(e, ApprovalDecided)]
    assert [(d.approved, d.decided_by) for d in decisions] == [(False, "timeout")]
    assert not any(isinstance(e, ToolCallAuthorized) for e in events)
    (observation,) = [e for e in events if isinstance(e, ToolCallCompleted)]
    assert observation.is_error and observation.content.startswith("DENIED")
    assert "nobody decided in time" in observation.content
    # The run went on: the model's next turn was asked with the denial in its context.
    asked_after = [e for e in events if isinstance(e, LlmCallRequested) and e.step > observation.step]
    assert asked_after and "nobody decided in time" in asked_after[0].messages_json
    assert any(isinstance(e, RunCompleted) for e in events)
    # No money moved: not one transfer, not even an attempt.
    assert bank_stats(env.d.settings.bank_path) == bank_before


async def test_a_tools_registered_approval_timeout_is_shown_validated_and_enforced(env: Env) -> None:
    async with env.client("globex") as c:
        for bad in (0, 0.5, -3, 604_801, "5", True):
            r = await c.post("/v1/tools", json={**WIRE_TOOL, "approval_timeout_s": bad})
            assert r.status_code == 422 and r.json()["error"]["field"] == "approval_timeout_s", (bad, r.text)

        # Without a deadline of its own, the tenant's policy (600 s) is the tool's.
        r = await c.post("/v1/tools", json=WIRE_TOOL)
        assert r.status_code == 201, r.text
        assert (r.json()["approval_timeout_s"], r.json()["effective_approval_timeout_s"]) == (None, 600)
        # A deadline is part of the contract: a changed one is a new version, the same one is not.
        first = (await c.post("/v1/tools", json={**WIRE_TOOL, "approval_timeout_s": 3})).json()
        assert first["version"] == "2"
        assert (first["approval_timeout_s"], first["effective_approval_timeout_s"]) == (3, 3)
        again = await c.post("/v1/tools", json={**WIRE_TOOL, "approval_timeout_s": 3.0})
        assert again.json()["version"] == "2"
        shown = (await c.get("/v1/tools/wire_money")).json()
        assert shown["versions"] == ["1", "2"]
        listed = {t["name"]: t for t in (await c.get("/v1/tools")).json()["data"]}
        for view in (shown, listed["wire_money"]):
            assert (view["approval_timeout_s"], view["effective_approval_timeout_s"]) == (3, 3)
        platform_tool = listed["transfer_funds"]
        assert (platform_tool["approval_timeout_s"], platform_tool["effective_approval_timeout_s"]) == (None, 600)
        # A tool's deadline only ever shortens the tenant's.
        longer = (await c.post("/v1/tools", json={**WIRE_TOOL, "name": "slow_wire", "approval_timeout_s": 900})).json()
        assert (longer["approval_timeout_s"], longer["effective_approval_timeout_s"]) == (900, 600)

        await asyncio.sleep(2.0)  # the orchestrator and the gate read the catalog before each batch
        run_id = await start_run(c, "wire")
        approval = await pending_approval(c, run_id)
        assert approval["tool"] == "wire_money" and approval["tool_version"] == "2"
        assert approval["expires_at_ms"] - approval["requested_at_ms"] == 3000  # the tool's, not globex's 600 s
        run = await wait_status(c, run_id, ("completed", "failed"), timeout_s=60)
        assert run["status"] == "completed"
        assert (await c.get(f"/v1/approvals/{approval['id']}")).json()["status"] == "expired"
    events = [e.event for e in await env.d.client.read_run(run_id)]
    assert next(e for e in events if isinstance(e, RunStarted)).tool_versions["wire_money"] == "2"
    asked = next(e for e in events if isinstance(e, ApprovalRequested))
    assert asked.expires_ms - asked.requested_ms == 3000
    observation = next(e for e in events if isinstance(e, ToolCallCompleted))
    assert observation.is_error and "nobody decided in time" in observation.content


async def test_the_cli_registers_lists_and_shows_a_tools_approval_timeout(
    env: Env, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = env.d.settings
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", settings.bootstrap_servers)
    monkeypatch.setenv("AGENTSTREAM_TOPIC_PREFIX", settings.topic_prefix)
    monkeypatch.setenv("AGENTSTREAM_HOME", str(settings.home))

    async def cli(*argv: str) -> tuple[int, str, str]:
        args = parser().parse_args(["tools", *argv])
        code = await args.handler(args)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    register = ("register", "cli_wire", "--command", "python3 -m mcp_server_time", "--tier", "irreversible",
                "--owner", "globex")  # fmt: skip
    code, _, err = await cli(*register, "--approval-timeout-s", "0")
    assert code == 1 and "approval timeout must be between 1 s and 604800 s" in err
    code, out, _ = await cli(*register, "--approval-timeout-s", "2.5")
    assert code == 0 and out.strip() == "cli_wire v1 (irreversible, approval timeout 2.5 s)"
    code, out, _ = await cli("show", "cli_wire", "--owner", "globex")
    assert code == 0 and json.loads(out)[0]["approval_timeout_s"] == 2.5
    code, out, _ = await cli("list", "--tenant", "globex")
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert "approval    2.5s" in lines["cli_wire"] and "approval    600s" in lines["transfer_funds"]
    code, out, _ = await cli("policy", "initech", "--private-tool", "read_file", "--egress-tool", "send_email",
                             "--taint-action", "deny", "--approval-timeout-s", "60")  # fmt: skip
    stored = json.loads(out.split(": ", 1)[1])
    assert code == 0 and stored["private_tools"] == ["read_file"] and stored["egress_tools"] == ["send_email"]
    assert stored["taint_action"] == "deny"
