"""The CLI's edges against a real stack: `run --follow` returns at a halt with how to resume (exit
3), `approvals list|approve|deny` as the operator and through the API, and `tools discover` with
a tiers file registering a real MCP server's tools in one command."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agentstream.cli import commands
from agentstream.cli.approvals import _as_operator, run_approvals_command
from agentstream.cli.main import parser
from agentstream.cli.tools import _dispatch as tools_command
from agentstream.client.http import RunsClient
from agentstream.client.journal import RunRequest
from agentstream.events import ApprovalDecided, ApprovalRequested, RunCompleted, RunEvent, ToolCallCompleted
from agentstream.gateway.service import running_gateway
from agentstream.registry.admin import read_catalog
from agentstream.registry.entry import TenantPolicy
from agentstream.stack import Deployment
from agentstream.tenancy.admin import create_tenant, issue_key
from tests.harness import isolated_settings, make_git_repo

PAY = {
    "tool_calls": [{"name": "transfer_funds", "arguments": {"to_account": "ACC-9", "amount_cents": 500, "memo": "x"}}]
}
SCENARIOS: dict[str, dict[str, Any]] = {
    "loop": {"turns": [{"tool_calls": [{"name": "calculator", "arguments": {"expression": "1"}}]}], "repeat_last": True},
    "pay": {"turns": [PAY, {"text": "paid"}]},
}  # fmt: skip
PERSON = TenantPolicy(approval_timeout_s=600)  # no auto-approval: a person decides


@dataclass
class Stack:
    d: Deployment
    url: str
    alice: str  # acme's key that starts runs
    bob: str  # acme's key that decides approvals


@pytest.fixture(scope="module")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    settings, scen = await isolated_settings(kafka_bootstrap, tmp_path_factory.mktemp("cli"), "cli", SCENARIOS)
    await create_tenant(settings, "acme", "Acme", rate_per_s=100, burst=200, max_active_runs=50)
    alice = await issue_key(settings, "acme", "alice", ["runs:read", "runs:write"])
    bob = await issue_key(settings, "acme", "bob", ["runs:read", "approvals:decide"])
    async with (
        Deployment(settings, [scen], policies={"default": PERSON, "acme": PERSON}) as d,
        running_gateway(settings, port=0) as url,
    ):
        yield Stack(d, url, alice, bob)


def cli(*argv: str) -> argparse.Namespace:
    return parser().parse_args(list(argv))


async def test_run_follow_returns_at_a_halt_with_how_to_resume(
    stack: Stack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AGENTSTREAM_API_KEY", raising=False)
    settings = stack.d.settings
    started = time.monotonic()
    code = await commands._run(settings, cli("run", "[scenario:loop] go", "--tool", "calculator", "--follow"))
    out, err = capsys.readouterr()
    run_id = out.splitlines()[0]
    assert code == commands.EXIT_HALTED == 3 and time.monotonic() - started < 60
    assert "status         halted" in out and "reason         loop:" in out
    assert f"agentstream runs resume {run_id} --add-steps 10" in err and f"agentstream runs cancel {run_id}" in err

    # Resumed, the loop repeats and halts again: a follower reads past the resumed halt to the new one.
    assert await commands._resume(settings, cli("runs", "resume", run_id, "--add-steps", "5")) == 0
    assert await commands.follow_and_print(stack.d.client, run_id, timeout_s=60) == commands.EXIT_HALTED
    out, err = capsys.readouterr()
    assert out.count("halted     after") == 2 and "resume requested" in out and "agentstream runs resume" in err
    await stack.d.client.cancel(run_id, "default", "enough")
    assert await commands.follow_and_print(stack.d.client, run_id, timeout_s=60) == commands.EXIT_ENDED_OTHERWISE
    assert "status         cancelled" in capsys.readouterr().out


async def test_run_follow_through_the_api_also_returns_at_the_halt(
    stack: Stack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTSTREAM_API_URL", stack.url)
    monkeypatch.setenv("AGENTSTREAM_API_KEY", stack.alice)
    code = await commands._run(stack.d.settings, cli("run", "[scenario:loop] go", "--tool", "calculator", "--follow"))
    out, err = capsys.readouterr()
    assert code == commands.EXIT_HALTED and "status         halted" in out
    assert f"agentstream runs resume {out.splitlines()[0]} --add-steps 10" in err


async def _asked(stack: Stack, run_id: str) -> ApprovalRequested:
    def asked(e: RunEvent) -> bool:
        return isinstance(e, ApprovalRequested)

    entries = [e async for e in stack.d.client.follow(run_id, timeout_s=60, until=asked)]
    found = entries[-1].event
    assert isinstance(found, ApprovalRequested)
    return found


async def _events(stack: Stack, run_id: str) -> list[RunEvent]:
    return [e.event async for e in stack.d.client.follow(run_id, timeout_s=60)]


async def test_the_operator_lists_approves_and_denies_from_the_cli(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = stack.d.settings
    paid = await stack.d.client.request_run(RunRequest(task="[scenario:pay] pay", tools=["transfer_funds"]))
    refused = await stack.d.client.request_run(RunRequest(task="[scenario:pay] pay", tools=["transfer_funds"]))
    first, second = await _asked(stack, paid), await _asked(stack, refused)

    assert await _as_operator(settings, cli("approvals", "list")) == 0
    listed = capsys.readouterr().out
    assert f"{first.approval_id}  pending  transfer_funds (irreversible)  run {paid}" in listed
    assert second.approval_id in listed and '"amount_cents":500' in listed

    assert await _as_operator(settings, cli("approvals", "approve", first.approval_id, "--reason", "ok")) == 0
    assert await _as_operator(settings, cli("approvals", "deny", second.approval_id)) == 0
    events = await _events(stack, paid)
    assert isinstance(events[-1], RunCompleted)
    decided = next(e for e in events if isinstance(e, ApprovalDecided))
    assert decided.approved and decided.decided_by.startswith("cli:") and decided.reason == "ok"
    observation = next(e for e in await _events(stack, refused) if isinstance(e, ToolCallCompleted))
    assert observation.is_error and "denied by cli:" in observation.content
    capsys.readouterr()

    # A second decision, or an unknown id, is a clear refusal.
    assert await _as_operator(settings, cli("approvals", "deny", first.approval_id)) == 1
    assert f"approval {first.approval_id} is already approved" in capsys.readouterr().err
    assert await _as_operator(settings, cli("approvals", "approve", "nope")) == 1
    assert "no approval nope in the journal" in capsys.readouterr().err
    assert await _as_operator(settings, cli("approvals", "list", "--status", "all", "--json")) == 0
    statuses = {a["id"]: a["status"] for a in json.loads(capsys.readouterr().out)["data"]}
    assert statuses[first.approval_id] == "approved" and statuses[second.approval_id] == "denied"


async def test_approvals_through_the_api_decide_as_the_key(
    stack: Stack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with RunsClient(stack.url, stack.alice) as alice:
        run = await alice.create("[scenario:pay] pay", tools=["transfer_funds"])
    asked = await _asked(stack, run.id)
    monkeypatch.setenv("AGENTSTREAM_API_URL", stack.url)
    # Alice's key may not decide (no approvals:decide scope): the gateway's refusal, said plainly.
    monkeypatch.setenv("AGENTSTREAM_API_KEY", stack.alice)
    assert await run_approvals_command(cli("approvals", "approve", asked.approval_id)) == 1
    assert "refused: 403" in capsys.readouterr().err
    monkeypatch.setenv("AGENTSTREAM_API_KEY", stack.bob)
    assert await run_approvals_command(cli("approvals", "list", "--json")) == 0
    assert asked.approval_id in {a["id"] for a in json.loads(capsys.readouterr().out)["data"]}
    assert await run_approvals_command(cli("approvals", "approve", asked.approval_id)) == 0
    assert f"approved {asked.approval_id}: transfer_funds" in capsys.readouterr().out
    events = await _events(stack, run.id)
    assert isinstance(events[-1], RunCompleted)
    assert next(e for e in events if isinstance(e, ApprovalDecided)).decided_by.startswith("api:acme:key/")
    assert await run_approvals_command(cli("approvals", "approve", "ap_unknown")) == 1
    assert "no approval ap_unknown for this API key's tenant" in capsys.readouterr().err


async def test_discover_registers_a_servers_tools_with_their_own_tiers_in_one_command(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = stack.d.settings
    repo = make_git_repo(tmp_path / "repo")
    server = f"{sys.executable} -m mcp_server_git --repository {repo}"
    started = time.monotonic()
    assert await tools_command(settings, cli("tools", "discover", "--command", server)) == 0
    listing = time.monotonic() - started
    drafts = [json.loads(line) for line in capsys.readouterr().out.splitlines()]  # JSON lines
    names = {d["name"] for d in drafts}
    assert {"git_status", "git_log", "git_commit"} <= names and len(names) == len(drafts) > 5

    tiers = tmp_path / "tiers.yaml"
    tiers.write_text("git_status: read_only\ngit_log: read_only\n"
                     "git_commit: {tier: irreversible, scopes: [repo:write]}\n")  # fmt: skip
    argv = ("tools", "discover", "--command", server, "--tiers", str(tiers), "--register-as", "reversible")
    started = time.monotonic()
    assert await tools_command(settings, cli(*argv)) == 0
    took = time.monotonic() - started
    assert len(capsys.readouterr().out.splitlines()) == len(names)
    catalog = await read_catalog(settings)
    tier_of = {name: catalog.latest("", name) for name in names}
    assert tier_of["git_status"].tier == "read_only" and tier_of["git_log"].tier == "read_only"  # type: ignore[union-attr]
    commit = tier_of["git_commit"]
    assert commit is not None and commit.tier == "irreversible" and commit.scopes == ("repo:write",)
    rest = names - {"git_status", "git_log", "git_commit"}
    assert {tier_of[n].tier for n in rest} == {"reversible"}  # type: ignore[union-attr]
    print(f"discover: {listing:.2f} s; discover and register {len(names)} tools: {took:.2f} s", file=sys.stderr)
