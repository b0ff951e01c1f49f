"""End to end on the real broker: every processor as its own OS process, the scripted model server
speaking the provider wire protocol, the real mcp-server-time, the demo bank's SQLite file."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentstream import ids
from agentstream.cli.commands import show_run
from agentstream.cli.status import show_status
from agentstream.client.journal import JournalEntry, RunBudget, RunRequest
from agentstream.config import ModelSettings, Settings
from agentstream.events import (
    BudgetReserved,
    EvalVerdict,
    LlmCallFailed,
    LlmCallRequested,
    LoopDetected,
    RunCancelled,
    RunCompleted,
    RunEvent,
    RunFailed,
    RunHalted,
    RunStarted,
    ToolCallAuthorized,
    ToolCallCompleted,
)
from agentstream.processors.tool_executor.builtin import bank_stats, bank_transfers
from agentstream.processors.tool_executor.discovery import discover
from agentstream.registry.admin import read_catalog, register_tool
from agentstream.security.signing import platform_signers, sign_capability
from agentstream.stack import AUTO_APPROVE_DEMO, Deployment, ensure_topics
from agentstream.tools.replay import replay_events
from agentstream.trajectory import summarize
from bench.common import comparable_trajectory
from tests.harness import GIT_SAFE_ENV, isolated_settings, make_git_repo

TOOLS = ["calculator", "get_current_time", "lookup", "transfer_funds"]

SCENARIOS: dict[str, dict[str, Any]] = {
    "retry": {"turns": [
        {"fail_attempts": [{"status": 503, "times": 2}], "tool_calls": [{"name": "calculator", "arguments": {"expression": "1+1"}}]},
        {"text": "two"},
    ]},
    "fatal": {"turns": [{"fail_attempts": [{"status": 400, "times": 99}], "text": "never"}]},
    "slow": {"turns": [
        *[{"delay_ms": 150, "tool_calls": [
            {"name": "transfer_funds", "arguments": {"to_account": "ACME", "amount_cents": 100 + i, "memo": f"m{i}"}},
            {"name": "calculator", "arguments": {"expression": f"{i} * 3"}},
        ]} for i in range(6)],
        {"text": "paid six times"},
    ]},
    "loop": {"turns": [{"tool_calls": [{"name": "calculator", "arguments": {"expression": "1"}}]}], "repeat_last": True},
    # Step checks: the same two steps, once with the task's numbers, once with one from nowhere.
    "evalclean": {"turns": [{"tool_calls": [{"name": "calculator", "arguments": {"expression": "1234 + 4321"}}]},
                            {"text": "1,234 + 4,321 = 5,555."}]},
    "evalbroken": {"turns": [{"tool_calls": [{"name": "calculator", "arguments": {"expression": "1234 + 4329"}}]},
                             {"text": "1,234 + 4,321 = 5,563."}]},
}  # fmt: skip


@pytest.fixture(scope="module")
async def deployment(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    home = tmp_path_factory.mktemp("e2e")
    repo = make_git_repo(home / "repo")
    git_log = {"tool_calls": [{"name": "git_log", "arguments": {"repo_path": str(repo), "max_count": 1}}]}
    scenarios = {**SCENARIOS, "gitlog": {"turns": [git_log, {"text": "the last commit is the first one"}]}}
    settings, scen = await isolated_settings(kafka_bootstrap, home, "e2e", scenarios)
    # A third-party MCP server, registered like any tool: the executor starts it sandboxed on first use.
    transport = {"kind": "stdio", "server": "git", "command": sys.executable,
                 "args": ["-m", "mcp_server_git", "--repository", str(repo)], "env": GIT_SAFE_ENV}  # fmt: skip
    for draft in await discover(transport):
        await register_tool(settings, dataclasses.replace(draft, tier="read_only"))
    async with Deployment(settings, [scen], policies=AUTO_APPROVE_DEMO) as d:
        yield d


async def test_a_registered_third_party_mcp_server_runs_sandboxed_in_a_run(deployment: Deployment) -> None:
    d = deployment
    run_id = await d.client.request_run(
        RunRequest(task="[scenario:gitlog] what is the last commit?", tools=["git_log"])
    )
    entries = [e async for e in d.client.follow(run_id, timeout_s=60)]
    assert isinstance(entries[-1].event, RunCompleted)
    started = next(e.event for e in entries if isinstance(e.event, RunStarted))
    assert "git_log" in started.tool_versions  # pinned like every registered tool
    result = next(e.event for e in entries if isinstance(e.event, ToolCallCompleted))
    assert not result.is_error and "first commit" in result.content, result


async def run_to_end(d: Deployment, task: str, *, max_steps: int = 12, timeout_s: float = 60) -> list[JournalEntry]:
    run_id = await d.client.request_run(RunRequest(task=task, tools=TOOLS, max_steps=max_steps))
    return [e async for e in d.client.follow(run_id, timeout_s=timeout_s)]


async def test_demo_run_completes_and_is_reconstructible(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    entries = await run_to_end(deployment, "[scenario:demo] do the demo")
    summary = summarize(entries)
    assert summary.status == "completed", summary
    assert summary.steps >= 3 and summary.tool_calls >= 3
    assert {"calculator", "get_current_time", "transfer_funds"} <= set(summary.tools_used)
    assert not any(isinstance(e.event, ToolCallCompleted) and e.event.is_error for e in entries)

    # reconstructed from the journal alone, and the orchestrator replays it identically
    assert await show_run(deployment.settings, summary.run_id) == 0
    shown = capsys.readouterr().out
    assert summary.run_id in shown and "completed" in shown and "transfer_funds" in shown
    replay = replay_events([e.event for e in await deployment.client.read_run(summary.run_id)])
    assert replay.deterministic, replay.divergences


async def test_step_checks_journal_a_verdict_for_a_broken_run_and_none_for_a_clean_one(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    clean, broken = await asyncio.gather(
        run_to_end(deployment, "[scenario:evalclean] add 1,234 and 4,321"),
        run_to_end(deployment, "[scenario:evalbroken] add 1,234 and 4,321"),
    )
    assert isinstance(clean[-1].event, RunCompleted) and isinstance(broken[-1].event, RunCompleted)
    assert not [e for e in clean if isinstance(e.event, EvalVerdict)]
    verdicts = [e.event for e in broken if isinstance(e.event, EvalVerdict)]
    assert [(v.step, v.check_name) for v in verdicts] == [(1, "grounding")], verdicts  # 5563 was observed
    assert "4329" in verdicts[0].evidence_json
    assert await show_run(deployment.settings, broken[-1].event.run_id) == 0
    assert "check grounding failed (warning)" in capsys.readouterr().out


async def test_malformed_tool_call_is_an_error_observation(deployment: Deployment) -> None:
    entries = await run_to_end(deployment, "[scenario:malformed] go")
    assert isinstance(entries[-1].event, RunCompleted)
    completions = [e.event for e in entries if e.event.type_name == "LlmCallRequested"]
    second_prompt = json.loads(completions[1].messages_json)  # type: ignore[attr-defined]
    assert second_prompt[-1]["is_error"] and "not valid JSON" in second_prompt[-1]["content"]


async def test_provider_errors_are_recorded_and_retried(deployment: Deployment) -> None:
    entries = await run_to_end(deployment, "[scenario:retry] go")
    failures = [e.event for e in entries if isinstance(e.event, LlmCallFailed)]
    assert [(f.status, f.attempt, f.final) for f in failures] == [(503, 1, False), (503, 2, False)]
    assert isinstance(entries[-1].event, RunCompleted)


async def test_terminal_provider_error_fails_the_run_with_a_reason(deployment: Deployment) -> None:
    entries = await run_to_end(deployment, "[scenario:fatal] go")
    end = entries[-1].event
    assert isinstance(end, RunFailed) and end.error_type == "model_error" and "400" in end.reason


async def test_step_cap_halts_a_looping_run_which_resumes_with_more_steps(deployment: Deployment) -> None:
    d = deployment
    # The loop scenario repeats one tool call: with loop detection on warn, only the step cap stops it.
    warn = RunBudget(on_loop="warn")
    run_id = await d.client.request_run(RunRequest(task="[scenario:loop] go", tools=TOOLS, max_steps=4, budget=warn))

    def halted(n: int) -> Callable[[RunEvent], bool]:
        return lambda e: isinstance(e, RunHalted) and e.halt == n

    first = [e.event async for e in d.client.follow(run_id, timeout_s=60, until=halted(1))][-1]
    assert isinstance(first, RunHalted) and first.limit == "step_cap" and first.resumable and first.steps == 4
    await asyncio.sleep(1.0)  # a halted run stays halted: no model call is made while it waits
    late = [e for e in await d.client.read_run(run_id) if isinstance(e.event, LlmCallRequested) and e.event.step > 4]
    assert not late

    await d.client.resume(run_id, first.tenant_id, halt=1, add_steps=2, reason="more budget")
    await d.client.resume(run_id, first.tenant_id, halt=1, add_steps=2, reason="clicked twice")  # same event id
    second = [e.event async for e in d.client.follow(run_id, timeout_s=60, until=halted(2))][-1]
    assert isinstance(second, RunHalted) and second.steps == 6  # the duplicate resume added nothing

    await d.client.cancel(run_id, first.tenant_id, "enough")
    end = [e.event async for e in d.client.follow(run_id, timeout_s=60)][-1]
    assert isinstance(end, RunCancelled) and end.steps == 6


async def test_a_repeating_tool_call_halts_the_run_with_the_evidence(deployment: Deployment) -> None:
    d = deployment
    run_id = await d.client.request_run(RunRequest(task="[scenario:loop] go", tools=TOOLS, max_steps=20))
    entries = [e async for e in d.client.follow(run_id, timeout_s=60, until=lambda e: isinstance(e, RunHalted))]
    halt = entries[-1].event
    assert isinstance(halt, RunHalted) and halt.limit == "loop" and halt.steps == 3 and "calculator" in halt.reason
    (loop,) = [e.event for e in entries if isinstance(e.event, LoopDetected)]
    assert loop.kind in ("tool_call", "model_output") and loop.action == "halt" and loop.count == 3
    assert "calculator" in json.loads(loop.evidence_json)["repeated"]
    await d.client.cancel(run_id, halt.tenant_id, "seen enough")


async def test_state_is_rebuilt_from_the_topics_and_in_flight_runs_finish(deployment: Deployment) -> None:
    """SIGKILL every processor mid-run, delete every local state store, restart: all runs finish,
    with the same trajectories, no transfer applied twice and no completed model call re-sent."""
    d = deployment
    assert d.procs is not None
    reference = await run_to_end(d, "[scenario:slow] reference")
    run_ids = [await d.client.request_run(RunRequest(task=f"[scenario:slow] r{i}", tools=TOOLS)) for i in range(5)]
    async for entry in d.client.follow(run_ids[0], timeout_s=60):
        if entry.event.type_name == "ToolCallCompleted":
            break  # the runs are in flight
    for key in list(d.procs.procs):
        d.procs.kill(key, signal.SIGKILL)
    shutil.rmtree(d.settings.state_dir)
    assert not Path(d.settings.state_dir).exists()
    for key in list(d.procs.procs):
        d.procs.restart(key)
    ref = comparable_trajectory(reference, reference[0].event.run_id)
    for run_id in run_ids:
        entries = [e async for e in d.client.follow(run_id, timeout_s=90)]
        assert isinstance(entries[-1].event, RunCompleted)
        assert comparable_trajectory(entries, run_id) == ref
    assert bank_stats(d.settings.bank_path)["keys_applied_more_than_once"] == 0
    async with httpx.AsyncClient() as http:
        stats = (await http.get(f"{d.model_url}/_scripted/stats")).json()
    for run_id in run_ids:
        for entry in await d.client.read_run(run_id):
            if entry.event.type_name == "LlmCallCompleted":
                receipts = stats["calls"][entry.event.call_id]  # type: ignore[attr-defined]
                assert all(t <= entry.timestamp_ms for t in receipts), "a journaled model call was sent again"


async def test_sigterm_drains_and_a_restarted_processor_carries_on(deployment: Deployment) -> None:
    d = deployment
    assert d.procs is not None
    proc = d.procs.procs["orchestrator-0"]
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 20) == 0
    log = (d.procs.log_dir / "orchestrator-0.log").read_text()
    assert "orchestrator instance 0 stopped: Counters(" in log
    d.procs.start("orchestrator")
    entries = await run_to_end(d, "[scenario:demo] after a graceful restart")
    assert isinstance(entries[-1].event, RunCompleted)


async def test_status_reports_lag_and_counters(deployment: Deployment, capsys: pytest.CaptureFixture[str]) -> None:
    await asyncio.sleep(2.5)  # one status interval
    assert await show_status(deployment.settings) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert {"orchestrator-0", "model-invoker-0", "tool-executor-0"} <= set(rows)
    for name in ("orchestrator-0", "model-invoker-0", "tool-executor-0"):
        state, _age, lag, processed, errors = rows[name][1:6]
        assert state == "running" and int(lag) >= 0 and int(processed) > 0 and int(errors) == 0


async def test_a_second_orchestrator_instance_joins_and_leaves_without_losing_runs(deployment: Deployment) -> None:
    """Rebalances move partitions (and their state) between instances in both directions."""
    d = deployment
    assert d.procs is not None
    reference = await run_to_end(d, "[scenario:slow] reference")
    ref = comparable_trajectory(reference, reference[0].event.run_id)
    run_ids = [await d.client.request_run(RunRequest(task=f"[scenario:slow] rb{i}", tools=TOOLS)) for i in range(8)]
    d.procs.start("orchestrator", instance="1")  # joins: the group splits the partitions
    log_file = d.procs.log_dir / "orchestrator-1.log"
    deadline = time.monotonic() + 90  # a loaded machine starts a process and rebalances slowly
    while "orchestrator assigned partitions " not in (log_file.read_text() if log_file.exists() else ""):
        assert time.monotonic() < deadline, "the second orchestrator instance was never assigned partitions"
        await asyncio.sleep(0.5)
    await asyncio.sleep(1)  # it works on its share of the runs for a moment
    d.procs.procs["orchestrator-1"].send_signal(signal.SIGTERM)  # leaves: its partitions come back
    for run_id in run_ids:
        entries = [e async for e in d.client.follow(run_id, timeout_s=120)]
        assert isinstance(entries[-1].event, RunCompleted)
        assert comparable_trajectory(entries, run_id) == ref


async def test_anthropic_streaming_provider_end_to_end(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = Settings(kafka_bootstrap, f"e2ea{uuid.uuid4().hex[:8]}", tmp_path / "home", ModelSettings())
    settings.home.mkdir()
    await ensure_topics(settings)
    env = {"AGENTSTREAM_MODEL_PROVIDER": "anthropic", "AGENTSTREAM_MODEL_STREAM": "1"}
    async with Deployment(settings, extra_env=env, policies=AUTO_APPROVE_DEMO) as d:
        entries = await run_to_end(d, "[scenario:demo] via the Messages API, streamed")
        async with httpx.AsyncClient() as http:
            stats = (await http.get(f"{d.model_url}/_scripted/stats")).json()
    assert summarize(entries).status == "completed"
    assert stats["by_protocol"].get("anthropic", 0) >= 5 and not stats["by_protocol"].get("openai")


async def test_no_tool_starts_after_its_runs_cancel_is_journaled(deployment: Deployment) -> None:
    """A cancel journaled right behind an authorized call stops it, even though the executor reads
    the authorization first: the executor reads its partition to the end before any tool call that
    is not read-only starts. The test signs the authorizations itself, as the policy gate would, so
    the race between authorization and cancel is not left to the gate's timing; and it holds the
    executor (SIGSTOP) while the two are journaled, so the cancel is certain to be journaled before
    the call could start, rather than only likely to be (a free executor may start it first, rightly)."""
    d = deployment
    signer = platform_signers(d.settings).capability
    latest = (await read_catalog(d.settings)).latest("", "transfer_funds")
    assert latest is not None

    def request(run_id: str) -> ToolCallAuthorized:
        call_id = ids.tool_call_id(run_id, 1, 0)
        args = json.dumps({"to_account": "ACME", "amount_cents": 7, "memo": "race"})
        unsigned = ToolCallAuthorized(
            ids.authorized_id(call_id), run_id, "t", 1, call_id, "c0", "transfer_funds", latest.version, args,
            call_id, 30000, "policy", int(time.time() * 1000) + 300_000, "", "",
        )  # fmt: skip
        return replace(unsigned, capability=sign_capability(signer, unsigned))

    def reserved(run_id: str) -> BudgetReserved:  # as the cost governor would, for the same call
        call_id = ids.tool_call_id(run_id, 1, 0)
        return BudgetReserved(f"{call_id}/reserved", run_id, "t", 1, call_id, "tool", "transfer_funds", 0.0, 0, 0.0,
                              0.0, "v", int(time.time() * 1000))  # fmt: skip

    cancelled, control = f"run_cancelrace{uuid.uuid4().hex[:8]}", f"run_control{uuid.uuid4().hex[:8]}"
    assert d.procs is not None
    executor = next(p for k, p in d.procs.procs.items() if k.startswith(("tool-executor-", "engine-")))
    executor.send_signal(signal.SIGSTOP)
    try:
        # Journaled as the cost governor and the policy gate would (the test holds the operator's keys).
        await d.client.append(reserved(cancelled), as_writer="cost-governor")
        await d.client.append(request(cancelled), as_writer="policy-gate")
        await d.client.cancel(cancelled, "t", "stop at once")
    finally:
        executor.send_signal(signal.SIGCONT)
    await d.client.append(reserved(control), as_writer="cost-governor")
    await d.client.append(request(control), as_writer="policy-gate")
    for _ in range(100):
        if any(t["idempotency_key"].startswith(control) for t in bank_transfers(d.settings.bank_path)):
            break
        await asyncio.sleep(0.1)
    keys = {t["idempotency_key"] for t in bank_transfers(d.settings.bank_path)}
    assert ids.tool_call_id(control, 1, 0) in keys  # the same request without a cancel runs
    assert ids.tool_call_id(cancelled, 1, 0) not in keys
    assert not any(e.event.type_name == "ToolCallCompleted" for e in await d.client.read_run(cancelled))


async def test_a_code_mode_program_makes_gated_journaled_calls_and_returns_one_observation(
    deployment: Deployment,
) -> None:
    """The model answers with one run_code program (bundled scenario `codemode`): each of its tool
    calls is requested, gated (one refused by the gate for its arguments, the irreversible
    transfer approved by the tenant's policy), run and journaled on its own; the model reads one
    observation; and the orchestrator replays the whole journal to the same decisions."""
    from agentstream.codemode.interface import RUN_CODE_TOOL
    from agentstream.events import PolicyDecided, ToolCallRequested

    d = deployment
    run_id = await d.client.request_run(
        RunRequest(task="[scenario:codemode] split the bills and pay my share", tools=[*TOOLS, RUN_CODE_TOOL])
    )
    events = [e.event async for e in d.client.follow(run_id, timeout_s=90)]
    assert isinstance(events[-1], RunCompleted), events[-1]
    started = next(e for e in events if isinstance(e, RunStarted))
    assert "def transfer_funds(amount_cents: int, memo: str, to_account: str) -> str:" in started.system_prompt
    requested = [e for e in events if isinstance(e, ToolCallRequested)]
    nested = [e for e in requested if e.tool != RUN_CODE_TOOL]
    assert [e.tool for e in nested] == ["lookup", "calculator", "calculator", "transfer_funds", "calculator"]
    assert len(requested) - len(nested) == 6  # a round per call, and the one that ends the program
    authorized = {e.call_id: e for e in events if isinstance(e, ToolCallAuthorized)}
    denied = {e.call_id: e for e in events if isinstance(e, PolicyDecided) and e.decision == "deny"}
    assert set(denied) == {nested[-1].call_id} and denied[nested[-1].call_id].rule == "arguments"
    assert all(e.call_id in authorized for e in requested if e.call_id not in denied)  # every other call gated
    assert authorized[nested[3].call_id].rule == "auto_approve"  # irreversible: the tenant's approval rule
    results = {e.call_id: e for e in events if isinstance(e, ToolCallCompleted)}
    assert all(e.call_id in results for e in requested)  # and every one journaled with its result
    model_call = ids.tool_call_id(run_id, 1, 0)
    observation = results[model_call]
    assert not observation.is_error, observation.content
    assert "share 3125" in observation.content and "refused: DENIED by policy (arguments)" in observation.content
    assert observation.content.rstrip().endswith("replicated commit log used as an event-streaming platform")
    second = [e for e in events if isinstance(e, LlmCallRequested)][1]
    tool_messages = [m for m in json.loads(second.messages_json) if m["role"] == "tool"]
    assert [m["content"] for m in tool_messages] == [observation.content]  # the model reads one observation
    assert [t["amount_cents"] for t in bank_transfers(d.settings.bank_path)
            if t["idempotency_key"].startswith(run_id)] == [3125]  # fmt: skip
    replay = replay_events([e.event for e in await d.client.read_run(run_id)])
    assert replay.deterministic, replay.divergences


async def test_a_code_mode_program_survives_processor_crashes_without_running_a_call_twice(
    deployment: Deployment,
) -> None:
    """SIGKILL the orchestrator and the tool executor in the middle of a program (bundled scenario
    `codemode_crash`: wait, pay, three times): rounds run again replay the recorded results, so
    every payment is made once and the program's one observation is whole."""
    from agentstream.codemode.interface import RUN_CODE_TOOL

    d = deployment
    assert d.procs is not None
    run_id = await d.client.request_run(
        RunRequest(task="[scenario:codemode_crash] pay three times", tools=[*TOOLS, "sleep_ms", RUN_CODE_TOOL])
    )
    async for entry in d.client.follow(run_id, timeout_s=60):
        if isinstance(entry.event, ToolCallCompleted) and entry.event.tool == "transfer_funds":
            break  # one payment made, the program mid-way
    for key in ("orchestrator-0", "tool-executor-0"):
        d.procs.restart(key)
    events = [e.event async for e in d.client.follow(run_id, timeout_s=120)]
    assert isinstance(events[-1], RunCompleted), events[-1]
    paid = [t for t in bank_transfers(d.settings.bank_path) if t["idempotency_key"].startswith(run_id)]
    assert sorted(t["amount_cents"] for t in paid) == [100, 101, 102]
    assert bank_stats(d.settings.bank_path)["keys_applied_more_than_once"] == 0
    model_call = ids.tool_call_id(run_id, 1, 0)
    observation = next(e for e in events if isinstance(e, ToolCallCompleted) and e.call_id == model_call)
    assert observation.content.count("confirmed") == 3 and not observation.is_error, observation.content
    replay = replay_events([e.event for e in await d.client.read_run(run_id)])
    assert replay.deterministic, replay.divergences
