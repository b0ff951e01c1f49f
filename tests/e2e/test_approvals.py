"""Human approval of irreversible tool calls, driven through the run API against the real broker
and processors: a run pauses on the approval, resumes on the decision (recorded under the API key
that made it), and an unanswered request is denied at its deadline even when every processor was
restarted in between. (Everything killed and rebuilt from the topics: test_approval_deadlines.py.)"""

from __future__ import annotations

import asyncio
import time
import uuid
from argparse import Namespace
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import orjson
import pytest

from agentstream import ids
from agentstream.cli import workflows as workflows_cli
from agentstream.client.http import RunsClient
from agentstream.events import (
    ApprovalDecided,
    ApprovalRequested,
    BudgetReserved,
    LlmCallRequested,
    RunCompleted,
    RunRequested,
    RunStarted,
    ToolCallAuthorized,
    ToolCallCompleted,
    ToolCallRequested,
)
from agentstream.gateway.service import running_gateway
from agentstream.processors.tool_executor.builtin import bank_transfers
from agentstream.registry.admin import read_catalog, set_policy
from agentstream.registry.entry import TenantPolicy
from agentstream.security.signing import platform_signers, sign_capability
from agentstream.stack import Deployment
from agentstream.tenancy.admin import create_tenant, issue_key
from agentstream.tenancy.keys import parse_key
from agentstream.workflows.definition import EXAMPLES
from tests.harness import isolated_settings

PAY = {
    "tool_calls": [
        {"name": "transfer_funds", "arguments": {"to_account": "ACC-1", "amount_cents": 1234, "memo": "rent"}}
    ]
}
# graph-high: every model node of a graph run answers "4" (a severe ticket: the approval path).
SCENARIOS: dict[str, dict[str, Any]] = {"pay": {"turns": [PAY, {"text": "done"}]},
                                        "graph-high": {"turns": [{"text": "4"}], "repeat_last": True}}  # fmt: skip
EXAMPLE_WORKFLOW = EXAMPLES / "ticket_triage.json"
POLICY = TenantPolicy(approval_timeout_s=600, allow_self_approval=True)


@dataclass
class Env:
    url: str
    key: str
    d: Deployment
    other_key: str  # a second key of the same tenant: another person

    def client(self, key: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key or self.key}"}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=60)

    def transfers(self, run_id: str) -> list[dict[str, Any]]:
        return [t for t in bank_transfers(self.d.settings.bank_path) if t["idempotency_key"].startswith(run_id)]


@pytest.fixture(scope="module")
async def env(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    settings, scen = await isolated_settings(kafka_bootstrap, tmp_path_factory.mktemp("approvals"), "ap", SCENARIOS)
    await create_tenant(settings, "acme", "Acme", rate_per_s=100, burst=200, max_active_runs=50)
    # Both people's keys may decide approvals, and this module's runs are approved by the key that
    # started them (the tenant allows it): refusing that is test_attack_self_approval.py's subject.
    scopes = ["runs:read", "runs:write", "approvals:decide", "tools:write"]
    key = await issue_key(settings, "acme", "alice", scopes)
    other_key = await issue_key(settings, "acme", "bob", scopes)
    policies = {"acme": POLICY}  # no auto-approval: a person decides
    async with Deployment(settings, [scen], policies=policies) as d, running_gateway(settings, port=0) as url:
        yield Env(url, key, d, other_key)


def decider(key: str) -> str:
    """The decider on record for decisions made with `key`: its tenant and key id."""
    return f"api:acme:key/{parse_key(key)}"


async def start_pay_run(c: httpx.AsyncClient) -> str:
    r = await c.post("/v1/runs", json={"task": "[scenario:pay] pay rent", "max_steps": 5},
                     headers={"Idempotency-Key": uuid.uuid4().hex})  # fmt: skip
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def pending_approval(c: httpx.AsyncClient, run_id: str, timeout_s: float = 60) -> dict[str, Any]:
    for _ in range(int(timeout_s * 10)):
        for item in (await c.get("/v1/approvals", params={"status": "pending"})).json()["data"]:
            if item["run_id"] == run_id:
                return dict(item)
        await asyncio.sleep(0.1)
    raise AssertionError(f"no pending approval for {run_id}")


async def wait_status(
    c: httpx.AsyncClient, run_id: str, statuses: tuple[str, ...], timeout_s: float = 60
) -> dict[str, Any]:
    for _ in range(int(timeout_s * 10)):
        run = (await c.get(f"/v1/runs/{run_id}")).json()
        if run["status"] in statuses:
            return dict(run)
        await asyncio.sleep(0.1)
    raise AssertionError(f"run {run_id} never reached {statuses}")


async def test_an_irreversible_call_waits_for_a_person_and_runs_once_approved(env: Env) -> None:
    async with env.client() as c:
        run_id = await start_pay_run(c)
        approval = await pending_approval(c, run_id)
        assert approval["tool"] == "transfer_funds" and approval["tier"] == "irreversible"
        assert (await c.get(f"/v1/runs/{run_id}")).json()["status"] == "awaiting_approval"
        # Paused: nothing executes and the model is not called while the approval is open.
        model_calls = sum(isinstance(e.event, LlmCallRequested) for e in await env.d.client.read_run(run_id))
        await asyncio.sleep(1.5)
        assert sum(isinstance(e.event, LlmCallRequested) for e in await env.d.client.read_run(run_id)) == model_calls
        assert env.transfers(run_id) == []

        r = await c.post(f"/v1/approvals/{approval['id']}", json={"decision": "approve", "decided_by": "alice"})
        assert r.status_code == 202
        assert (await wait_status(c, run_id, ("completed", "failed")))["status"] == "completed"
        again = await c.post(f"/v1/approvals/{approval['id']}", json={"decision": "deny"})
        assert again.status_code == 409
    assert len(env.transfers(run_id)) == 1
    events = [e.event for e in await env.d.client.read_run(run_id)]
    decided = next(e for e in events if isinstance(e, ApprovalDecided))
    assert decided.approved and decided.decided_by == decider(env.key)
    assert decided.reason == "approve (decider's note: alice)"
    authorized = next(e for e in events if isinstance(e, ToolCallAuthorized))
    assert authorized.authorized_by == f"approval:{decider(env.key)}"


@pytest.mark.parametrize("claimed", ["alice", "api:acme:key/" + "0" * 12, "timeout"])
async def test_the_decider_on_record_is_the_authenticated_key_whatever_the_body_claims(env: Env, claimed: str) -> None:
    """Bob's key decides while the body names someone else (Alice, Alice's key, the timer): the
    decision is recorded as Bob's key's, the claim only as a note, and it is never an expiry."""
    async with env.client() as alice, env.client(env.other_key) as bob:
        run_id = await start_pay_run(alice)
        approval = await pending_approval(alice, run_id)
        r = await bob.post(f"/v1/approvals/{approval['id']}",
                           json={"decision": "deny", "decided_by": claimed, "reason": "not today"})  # fmt: skip
        assert r.status_code == 202, r.text
        await wait_status(alice, run_id, ("completed",))
        decided = (await alice.get(f"/v1/approvals/{approval['id']}")).json()
    assert decided["status"] == "denied" and decided["decided_by"] == decider(env.other_key) != decider(env.key)
    assert decided["decision_reason"] == f"not today (decider's note: {claimed})"
    events = [e.event for e in await env.d.client.read_run(run_id)]
    (recorded,) = [e for e in events if isinstance(e, ApprovalDecided)]
    assert recorded.decided_by == decider(env.other_key)
    observation = next(e for e in events if isinstance(e, ToolCallCompleted))
    assert observation.is_error and f"denied by {decider(env.other_key)}" in observation.content
    assert env.transfers(run_id) == []


async def test_a_decision_without_a_valid_key_is_refused(env: Env) -> None:
    async with env.client() as c:
        run_id = await start_pay_run(c)
        approval = await pending_approval(c, run_id)
        async with httpx.AsyncClient(base_url=env.url, timeout=60) as anonymous:
            r = await anonymous.post(f"/v1/approvals/{approval['id']}", json={"decision": "approve"})
            assert r.status_code == 401
            forged = {"Authorization": f"Bearer as_{parse_key(env.key)}_{'A' * 43}"}  # a real key id, no secret
            r = await anonymous.post(f"/v1/approvals/{approval['id']}", json={"decision": "approve"}, headers=forged)
            assert r.status_code == 401
        assert (await c.get(f"/v1/approvals/{approval['id']}")).json()["status"] == "pending"
        await c.post(f"/v1/approvals/{approval['id']}", json={"decision": "deny"})
        await wait_status(c, run_id, ("completed",))
    assert env.transfers(run_id) == []


async def test_a_denied_call_is_an_error_observation_and_never_runs(env: Env) -> None:
    async with env.client() as c:
        run_id = await start_pay_run(c)
        approval = await pending_approval(c, run_id)
        r = await c.post(f"/v1/approvals/{approval['id']}", json={"decision": "deny", "reason": "not expected"})
        assert r.status_code == 202
        await wait_status(c, run_id, ("completed",))
        decided = (await c.get(f"/v1/approvals/{approval['id']}")).json()
        assert decided["status"] == "denied" and decided["decision_reason"] == "not expected"
    observation = next(e.event for e in await env.d.client.read_run(run_id) if isinstance(e.event, ToolCallCompleted))
    assert observation.is_error and observation.content.startswith("DENIED")
    assert env.transfers(run_id) == []


async def test_forged_decisions_and_capabilities_execute_nothing(env: Env) -> None:
    async with env.client() as c:
        run_id = await start_pay_run(c)
        approval = await pending_approval(c, run_id)
        events = [e.event for e in await env.d.client.read_run(run_id)]
        asked = next(e for e in events if isinstance(e, ApprovalRequested))
        forged = ApprovalDecided(f"{asked.call_id}/approval/decided", run_id, "acme", asked.call_id,
                                 asked.approval_id, True, "api:acme:mallory", "trust me", 1, "00" * 32)  # fmt: skip
        await env.d.client.append(forged)
        fake_authorization = ToolCallAuthorized(
            f"{asked.call_id}/authorized", run_id, "acme", asked.step, asked.call_id, "call_x", "transfer_funds",
            asked.tool_version, asked.arguments_json, asked.call_id, 30_000, "policy", 10**13, "ab" * 32, "",
        )  # fmt: skip
        await env.d.client.append(fake_authorization)
        await env.d.client.append(replace(fake_authorization, capability=""))
        await asyncio.sleep(3.0)
        assert env.transfers(run_id) == []
        assert (await c.get(f"/v1/approvals/{approval['id']}")).json()["status"] == "pending"
        # The genuine decision still works afterwards.
        await c.post(f"/v1/approvals/{approval['id']}", json={"decision": "approve", "decided_by": "bob"})
        await wait_status(c, run_id, ("completed",))
    assert len(env.transfers(run_id)) == 1


async def test_a_signed_but_expired_or_altered_authorization_executes_nothing(env: Env) -> None:
    """Through the journal and the real executor: authorizations signed with the platform's key,
    as the gate signs them, one already expired and one altered after signing. Neither moves money;
    the expired one is answered with an error observation, and a fresh one for a third call runs."""
    signer = platform_signers(env.d.settings).capability
    latest = (await read_catalog(env.d.settings)).latest("", "transfer_funds")
    assert latest is not None
    run_id = f"run_capexpiry{uuid.uuid4().hex[:8]}"
    now = int(time.time() * 1000)

    async def authorize(index: int, expires_ms: int, amount: int = 99) -> ToolCallAuthorized:
        call_id = ids.tool_call_id(run_id, 1, index)
        args = f'{{"to_account": "ACC-2", "amount_cents": {amount}, "memo": "cap"}}'
        unsigned = ToolCallAuthorized(
            ids.authorized_id(call_id), run_id, "acme", 1, call_id, f"c{index}", "transfer_funds", latest.version,
            args, call_id, 30_000, "policy", expires_ms, "", "",
        )  # fmt: skip
        # The executor runs a call only once the cost governor reserved it; the test reserves too.
        await env.d.client.append(BudgetReserved(f"{call_id}/reserved", run_id, "acme", 1, call_id, "tool",
                                                 "transfer_funds", 0.0, 0, 0.0, 0.0, "v", now),
                                  as_writer="cost-governor")  # fmt: skip
        return replace(unsigned, capability=sign_capability(signer, unsigned))

    expired = await authorize(0, now - 1)
    evil = '{"to_account": "EVIL", "amount_cents": 1000000, "memo": "cap"}'
    altered = replace(await authorize(1, now + 300_000), arguments_json=evil)
    fresh = await authorize(2, now + 300_000)
    for event in (expired, altered, fresh):
        await env.d.client.append(event, as_writer="policy-gate")  # journaled as the gate would
    for _ in range(300):
        completed = {e.event.call_id: e.event for e in await env.d.client.read_run(run_id)
                     if isinstance(e.event, ToolCallCompleted)}  # fmt: skip
        if {expired.call_id, fresh.call_id} <= set(completed):
            break
        await asyncio.sleep(0.1)
    assert completed[expired.call_id].is_error and "capability expired" in completed[expired.call_id].content
    assert not completed[fresh.call_id].is_error, completed[fresh.call_id].content
    assert altered.call_id not in completed  # refused before it entered the ledger: no result at all
    assert [t["idempotency_key"] for t in env.transfers(run_id)] == [fresh.idempotency_key]


async def test_an_unanswered_approval_is_denied_at_its_deadline_across_a_processor_restart(env: Env) -> None:
    await set_policy(env.d.settings, "acme", replace(POLICY, approval_timeout_s=6), by="test")
    await asyncio.sleep(1.0)  # the gate reads the control topic before each batch
    procs = env.d.procs
    assert procs is not None
    try:
        async with env.client() as c:
            run_id = await start_pay_run(c)
            approval = await pending_approval(c, run_id)
            await procs.stop_all()  # every processor down while the deadline passes
            await asyncio.sleep(max(0.0, approval["expires_at_ms"] / 1000 - time.time()) + 1.0)
            procs.start_all()
            run = await wait_status(c, run_id, ("completed",), timeout_s=90)
            assert run["status"] == "completed"
            decided = (await c.get(f"/v1/approvals/{approval['id']}")).json()
            assert decided["status"] == "expired" and decided["decided_by"] == "timeout"
            late = await c.post(f"/v1/approvals/{approval['id']}", json={"decision": "approve"})
            assert late.status_code == 409
        events = [e.event for e in await env.d.client.read_run(run_id)]
        assert any(isinstance(e, RunCompleted) for e in events)
        observation = next(e for e in events if isinstance(e, ToolCallCompleted))
        assert observation.is_error and "nobody decided in time" in observation.content
        assert env.transfers(run_id) == []
    finally:
        await set_policy(env.d.settings, "acme", POLICY, by="test")


async def test_registry_api_and_kill_switch(env: Env, tmp_path: Any) -> None:
    from agentstream.registry.admin import switch_tool

    async with env.client() as c:
        tools = {t["name"]: t for t in (await c.get("/v1/tools")).json()["data"]}
        assert tools["transfer_funds"]["tier"] == "irreversible" and tools["get_current_time"]["tier"] == "read_only"
        body = {"name": "git_tools", "tier": "read_only", "command": ["python3", "-m", "mcp_server_git"],
                "input_schema": {"type": "object", "properties": {"x": {"type": "string"}}}}  # fmt: skip
        first = await c.post("/v1/tools", json=body)
        assert first.status_code == 201 and first.json()["version"] == "1" and first.json()["owner"] == "acme"
        same = await c.post("/v1/tools", json=body)
        assert same.json()["version"] == "1"  # same contract, same version
        changed = await c.post("/v1/tools", json={**body, "input_schema": {"type": "object"}})
        assert changed.json()["version"] == "2"  # a schema change is a new version
        assert (await c.get("/v1/tools/git_tools")).json()["versions"] == ["1", "2"]
        bad = await c.post("/v1/tools", json={**body, "tier": "harmless"})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "tier"
        assert (await c.post("/v1/tools/transfer_funds/disable", json={})).status_code == 403
        both = await c.post("/v1/tools", json={**body, "url": "http://127.0.0.1:9/mcp"})
        assert both.status_code == 422 and "exactly one" in both.json()["error"]["message"]
        remote = {k: v for k, v in body.items() if k != "command"} | {"name": "remote", "url": "http://crm.example/mcp"}
        unlisted = await c.post("/v1/tools", json=remote)
        assert unlisted.status_code == 422 and "egress" in unlisted.json()["error"]["message"]
        listed = await c.post("/v1/tools", json={**remote, "egress": ["crm.example"]})
        assert listed.status_code == 201 and listed.json()["transport"] == "http"

        await switch_tool(env.d.settings, "", "transfer_funds", disabled=True, reason="incident 42", by="test")
        try:
            await asyncio.sleep(1.0)
            run_id = await start_pay_run(c)
            await wait_status(c, run_id, ("completed",))
            observation = next(
                e.event for e in await env.d.client.read_run(run_id) if isinstance(e.event, ToolCallCompleted)
            )
            assert (
                observation.is_error and "kill_switch" in observation.content and "incident 42" in observation.content
            )
            assert env.transfers(run_id) == []
        finally:
            await switch_tool(env.d.settings, "", "transfer_funds", disabled=False, reason="fixed", by="test")


async def test_a_registered_workflow_runs_its_branch_fan_out_and_approval_node(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    """Explicit graphs (issue 19): registered through the API (invalid ones refused with the rule
    they break), listed by the SDK and the CLI (both ways), a run of one takes the severe branch,
    waits at its approval node for a person, fans out to three calls that join, and completes; the
    journal names the path it took."""
    definition = orjson.loads(EXAMPLE_WORKFLOW.read_bytes())
    async with env.client() as c:
        first = await c.post("/v1/workflows", json=definition)
        assert first.status_code == 201 and first.json()["version"] == "1", first.text
        again = await c.post("/v1/workflows", json=definition)
        assert again.status_code == 200 and again.json()["version"] == "1"  # the same definition: unchanged
        looping = {**definition, "edges": [*definition["edges"], {"from": "close", "to": "classify"}]}
        bad = await c.post("/v1/workflows", json=looping)
        assert bad.status_code == 422 and bad.json()["error"]["type"] == "invalid_workflow", bad.text
        assert "cycle without a bound" in bad.json()["error"]["message"]
        typo = {**definition, "nodes": [*definition["nodes"][:-1], {**definition["nodes"][-1], "type": "tol"}]}
        assert (await c.post("/v1/workflows", json=typo)).status_code == 422
        assert [w["name"] for w in (await c.get("/v1/workflows")).json()["data"]] == ["ticket-triage"]
        assert (await c.get("/v1/workflows/ticket-triage")).json()["versions"] == ["1"]
    async with RunsClient(env.url, env.key) as sdk:
        assert [(w.name, w.version) for w in await sdk.workflows()] == [("ticket-triage", "1")]
        assert await workflows_cli.through_api(sdk, Namespace(workflows_command="show", name="ticket-triage",
                                                              version=""), None) == 0  # fmt: skip
    assert await workflows_cli.direct(env.d.settings, Namespace(workflows_command="list", tenant="acme"), None) == 0
    shown = capsys.readouterr().out
    assert '"versions": [' in shown and "ticket-triage\tv1" in shown
    async with env.client() as c:
        r = await c.post("/v1/runs", json={"task": "[scenario:graph-high] the printer is on fire", "max_steps": 10,
                                           "workflow": "ticket-triage"},
                         headers={"Idempotency-Key": uuid.uuid4().hex})  # fmt: skip
        assert r.status_code == 201, r.text
        run_id = str(r.json()["id"])
        approval = await pending_approval(c, run_id)
        assert approval["tool"] == "request_approval" and "severity 4" in orjson.dumps(approval).decode()
        decided = await c.post(f"/v1/approvals/{approval['id']}", json={"decision": "approve"})
        assert decided.status_code == 202, decided.text
        assert (await wait_status(c, run_id, ("completed", "failed")))["status"] == "completed"
    events = [e.event for e in await env.d.client.read_run(run_id)]
    started = next(e for e in events if isinstance(e, RunStarted))
    assert orjson.loads(started.workflow_json)["version"] == "1"  # the run pinned the version it started with
    end = next(e for e in events if isinstance(e, RunCompleted))  # settlements may follow it
    assert end.final_answer == "severity 4; summary: 4"
    assert end.reason == ("workflow path: classify route>review review escalate checks price assign note merge "
                          "summarize close")  # fmt: skip
    nodes = [e.call_id.split("/g/")[1] for e in events if isinstance(e, LlmCallRequested | ToolCallRequested)]
    assert sorted(nodes) == sorted(["classify.1", "review.1", "escalate.1", "price.1", "assign.1", "note.1",
                                    "summarize.1", "close.1"])  # fmt: skip
    assert next(e for e in events if isinstance(e, ApprovalDecided)).approved


async def test_a_workflow_node_can_be_a_react_loop_of_its_own(env: Env) -> None:
    """A graph whose first node is a subagent: a child run (its own id, depth 1, its own tools and
    a budget reserved on the parent's ledger) whose answer the graph writes to its state."""
    definition = {
        "name": "delegate", "state": {"rating": {"type": "number"}}, "start": "ask",
        "nodes": [{"id": "ask", "type": "subagent", "task": "{task}", "tools": ["lookup"], "max_steps": 3,
                   "output": "rating"},
                  {"id": "double", "type": "tool", "tool": "calculator", "arguments": {"expression": "{rating} * 2"}}],
        "edges": [{"from": "ask", "to": "double"}],
        "answer": "rated {rating}",
    }  # fmt: skip
    async with env.client() as c:
        assert (await c.post("/v1/workflows", json=definition)).status_code == 201
        r = await c.post("/v1/runs", json={"task": "[scenario:graph-high] rate it", "workflow": "delegate",
                                           "budget": {"usd": 1.0}},
                         headers={"Idempotency-Key": uuid.uuid4().hex})  # fmt: skip
        assert r.status_code == 201, r.text
        run_id = str(r.json()["id"])
        assert (await wait_status(c, run_id, ("completed", "failed")))["status"] == "completed"
    events = [e.event for e in await env.d.client.read_run(run_id)]
    assert next(e for e in events if isinstance(e, RunCompleted)).final_answer == "rated 4"
    carved = next(e for e in events if isinstance(e, BudgetReserved) and e.tool == "spawn_agent")
    child_events = [e.event for e in await env.d.client.read_run(ids.child_run_id(carved.call_id))]
    request = child_events[0]
    assert isinstance(request, RunRequested) and request.parent_run_id == run_id and request.depth == 1
    assert request.budget_usd == carved.reserved_usd > 0 and request.tools == ["lookup"]
    assert any(isinstance(e, RunCompleted) for e in child_events)
