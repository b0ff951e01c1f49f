"""Issue 13, finding 6: approvals need approvers. Against the real broker, processors and gateway:
the key that started a run cannot approve the run's irreversible transfer (403, no money moves),
nor can a key without `approvals:decide`; a separate approver's key can, and its key id is on the
record; a tenant whose policy allows self-approval gets it back. Every route checks its scope."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from agentstream.cli.main import parser
from agentstream.config import Settings
from agentstream.events import ApprovalDecided, RunRequested, ToolCallAuthorized
from agentstream.registry.admin import set_policy
from agentstream.registry.entry import TenantPolicy
from agentstream.tenancy import admin
from agentstream.tenancy.directory import TenantDirectory
from agentstream.tenancy.keys import parse_key
from bench.attacks import approvals as attacks
from bench.attacks.approvals import APPROVALS_TENANT, ApprovalsTarget, decide, pending_approval, start_run, wait_settled
from bench.attacks.redos import until_known
from tests.harness import isolated_settings


@pytest.fixture(scope="module")
async def target(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ApprovalsTarget]:
    home = tmp_path_factory.mktemp("selfapproval")
    settings, scenario_dir = await isolated_settings(kafka_bootstrap, home, "sa")
    async with attacks.approvals_target(settings, scenario_dir, home / "probe") as t:
        yield t


def key_id(key: str) -> str:
    found = parse_key(key)
    assert found is not None
    return found


async def test_the_runs_own_key_cannot_approve_its_transfer(target: ApprovalsTarget) -> None:
    async with target.client(target.keys["decider"]) as alice:
        run_id = await start_run(alice, "pay")
        approval = await pending_approval(alice, run_id)
        for extra in ({}, {"decided_by": "bob"}):
            r = await decide(alice, approval["id"], "approve", **extra)
            assert r.status_code == 403, r.text
            assert r.json()["error"]["type"] == "self_approval"
            assert key_id(target.keys["decider"]) in r.json()["error"]["message"]
        await asyncio.sleep(1.5)
        assert (await alice.get(f"/v1/approvals/{approval['id']}")).json()["status"] == "pending"
        assert target.transfers(run_id) == []
        async with target.client(target.keys["approver"]) as bob:
            assert (await decide(bob, approval["id"], "deny", reason="not mine to pay")).status_code == 202
        await wait_settled(alice, run_id)
    assert target.transfers(run_id) == []
    events = await target.journal(run_id)
    assert not any(isinstance(e, ToolCallAuthorized) for e in events)
    requested = next(e for e in events if isinstance(e, RunRequested))
    assert requested.api_key_id == key_id(target.keys["decider"])  # the run records its creator
    # The reusable attempts, as bench/security.py runs them.
    assert not await attacks.self_approval(target)
    assert not await attacks.self_approval_in_anothers_name(target)


async def test_a_key_without_approvals_decide_is_refused(target: ApprovalsTarget) -> None:
    async with target.client(target.keys["runner"]) as script, target.client(target.keys["other_runner"]) as other:
        run_id = await start_run(script, "pay")
        approval = await pending_approval(script, run_id)
        for c in (script, other):
            r = await decide(c, approval["id"], "approve")
            assert r.status_code == 403, r.text
            error = r.json()["error"]
            assert error["type"] == "missing_scope" and "approvals:decide" in error["message"]
        await asyncio.sleep(1.0)
        assert target.transfers(run_id) == []
        async with target.client(target.keys["approver"]) as bob:
            await decide(bob, approval["id"], "deny")
        await wait_settled(script, run_id)
    assert target.transfers(run_id) == []
    assert not await attacks.approve_without_scope(target)


async def test_a_separate_approver_decides_and_its_key_is_on_record(target: ApprovalsTarget) -> None:
    async with target.client(target.keys["runner"]) as script, target.client(target.keys["approver"]) as bob:
        run_id = await start_run(script, "pay")
        approval = await pending_approval(script, run_id)
        r = await decide(bob, approval["id"], "approve", reason="invoice checked")
        assert r.status_code == 202, r.text
        run = await wait_settled(script, run_id)
        assert run["status"] == "completed"
        shown = (await script.get(f"/v1/approvals/{approval['id']}")).json()
        listed = [a for a in (await script.get("/v1/approvals")).json()["data"] if a["id"] == approval["id"]]
    bob_id = key_id(target.keys["approver"])
    assert shown["status"] == "approved" and shown["decided_by_key_id"] == bob_id
    assert shown["decided_by"] == f"api:{APPROVALS_TENANT}:key/{bob_id}" and listed == [shown]
    assert len(target.transfers(run_id)) == 1
    decided = next(e for e in await target.journal(run_id) if isinstance(e, ApprovalDecided))
    assert decided.approved and decided.decided_by.endswith(f":key/{bob_id}")


async def test_a_tenant_policy_may_allow_self_approval(target: ApprovalsTarget) -> None:
    policy = TenantPolicy(approval_timeout_s=600)
    await set_policy(target.settings, APPROVALS_TENANT, replace(policy, allow_self_approval=True), by="test")
    await asyncio.sleep(1.0)  # the gateway reads the control topic at most once a refresh interval
    try:
        async with target.client(target.keys["decider"]) as alice:
            run_id = await start_run(alice, "pay")
            approval = await pending_approval(alice, run_id)
            r = await decide(alice, approval["id"], "approve")
            assert r.status_code == 202, r.text
            await wait_settled(alice, run_id)
        assert len(target.transfers(run_id)) == 1
        # The control: with the rule switched off, the same attempt succeeds (the bench sees it).
        assert await attacks.self_approval(target)
    finally:
        await set_policy(target.settings, APPROVALS_TENANT, policy, by="test")
        await asyncio.sleep(1.0)
    assert not await attacks.self_approval(target)


async def test_every_route_checks_its_scope(target: ApprovalsTarget) -> None:
    assert not await attacks.read_key_writes(target)
    async with target.client(target.keys["reader"]) as reader, target.client(target.keys["approver"]) as bob:
        r = await reader.post("/v1/runs", json={"task": "x"}, headers={"Idempotency-Key": uuid.uuid4().hex})
        assert r.status_code == 403 and "runs:write" in r.json()["error"]["message"]
        assert (await reader.get("/v1/runs")).status_code == 200
        assert (await reader.get("/v1/tools")).status_code == 200
        r = await bob.post("/v1/tools", json={"name": "t", "tier": "read_only", "command": ["true"]})
        assert r.status_code == 403 and "tools:write" in r.json()["error"]["message"]
    admin_key = await admin.issue_key(target.settings, APPROVALS_TENANT, "ops", ["admin"])
    async with target.client(admin_key) as ops:
        await until_known(ops)  # the gateway learns of a key issued after it started from the key topic
        run_id = await start_run(ops, "pay")
        approval = await pending_approval(ops, run_id)
        assert (await decide(ops, approval["id"], "approve")).status_code == 403  # admin, yet its own run
        async with target.client(target.keys["approver"]) as bob:
            await decide(bob, approval["id"], "deny")
        await wait_settled(ops, run_id)


async def test_scopes_are_issued_stored_and_listed(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from agentstream.cli import commands

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", settings.bootstrap_servers)
    monkeypatch.setenv("AGENTSTREAM_TOPIC_PREFIX", settings.topic_prefix)

    async def cli(*argv: str) -> tuple[int, str, str]:
        code = await commands.dispatch(parser().parse_args(argv))
        out, err = capsys.readouterr()
        return code, out, err

    await admin.create_tenant(settings, "acme", "ACME")
    code, out, err = await cli("keys", "issue", "acme", "--label", "bob", "--scopes", "runs:read,approvals:decide")
    assert code == 0 and "approvals:decide" in err
    approver = out.strip()
    code, out, _ = await cli("keys", "issue", "acme", "--label", "script")
    script = out.strip()
    code, _, err = await cli("keys", "issue", "acme", "--scopes", "runs:read,approve-everything")
    assert code == 1 and "unknown scope 'approve-everything'" in err
    code, out, _ = await cli("keys", "list", "acme")
    assert code == 0 and "runs:read,approvals:decide" in out and "runs:read,runs:write,tools:write" in out
    async with TenantDirectory(settings) as directory:
        bob, ci = directory.principal(f"Bearer {approver}"), directory.principal(f"Bearer {script}")
        assert bob is not None and bob.scopes == {"runs:read", "approvals:decide"}
        assert ci is not None and ci.scopes == {"runs:read", "runs:write", "tools:write"}  # the defaults
