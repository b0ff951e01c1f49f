"""Tool incidents on the whole stack. Poison-output quarantine: a tool's output is declared
poisoned since a time; the live runs that consumed it halt, the ended ones are flagged, and no
other run is touched (runs that used it before that time, runs that used other tools). Released, a
halted run resumes and finishes. Online alerts: the monitor sees a tool's error rate trip a rule,
disables the tool and calls the webhook; a healthy tool's rule stays quiet."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from agentstream.cli.quarantine import quarantine_command
from agentstream.client.journal import RunRequest
from agentstream.client.scan import read_journal
from agentstream.events import (
    AlertChanged,
    JudgeVerdict,
    LlmCallRequested,
    RunCompleted,
    RunFlagged,
    RunHalted,
    ToolCallCompleted,
)
from agentstream.judge.policy import JudgePolicy, set_judge_policy
from agentstream.monitor.admin import read_alerts, set_rule
from agentstream.monitor.daemon import Monitor
from agentstream.monitor.rules import parse_rule
from agentstream.quarantine.actions import quarantine_tool, release_quarantine
from agentstream.quarantine.book import QuarantineError, read_quarantines
from agentstream.registry.admin import read_catalog
from agentstream.stack import Deployment
from tests.harness import isolated_settings

POISON = {"name": "calculator", "arguments": {"expression": "6 * 7"}}
CLOCK = {"name": "get_current_time", "arguments": {"timezone": "UTC"}}
SCENARIOS: dict[str, dict[str, Any]] = {
    "before": {"turns": [{"tool_calls": [POISON]}, {"text": "It is 42."}]},
    # Consumes the poisoned result, then thinks for a while (the quarantine lands meanwhile), then
    # calls another tool: the run's kill switch refuses that call.
    "live": {"turns": [{"tool_calls": [POISON]}, {"delay_ms": 15000, "tool_calls": [CLOCK]}, {"text": "done"}]},
    "ended": {"turns": [{"tool_calls": [POISON]}, {"text": "It is 42."}]},
    "clean": {"turns": [{"tool_calls": [CLOCK]}, {"text": "It is late."}]},
    # The provider refuses every attempt: the run fails without an answer.
    "refused": {"turns": [{"fail_attempts": [{"status": 400, "times": 50}], "text": "never"}]},
    # convert_time refuses an unknown zone: every call of it here is a tool error.
    "broken": {
        "turns": [
            *[
                {
                    "tool_calls": [
                        {
                            "name": "convert_time",
                            "arguments": {"source_timezone": "Mars/Olympus", "time": "12:00", "target_timezone": "UTC"},
                        }
                    ]
                }
            ]
            * 2,
            {"text": "no"},
        ]
    },
}
TOOLS = ["calculator", "get_current_time", "convert_time"]


@pytest.fixture(scope="module")
async def deployment(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    home: Path = tmp_path_factory.mktemp("quarantine")
    settings, scen = await isolated_settings(kafka_bootstrap, home, "quar", SCENARIOS)
    async with Deployment(settings, [scen]) as d:
        yield d


async def _start(d: Deployment, scenario: str, count: int) -> list[str]:
    request = RunRequest(task=f"[scenario:{scenario}] what is 6 times 7?", tools=TOOLS, tenant_id="acme")
    return [await d.client.request_run(request) for _ in range(count)]


async def _until(d: Deployment, check: object, timeout_s: float) -> dict[str, list[object]]:
    deadline = time.monotonic() + timeout_s
    while True:
        runs = {r: [e.event for e in entries] for r, entries in (await read_journal(d.settings)).items()}
        if check(runs) or time.monotonic() > deadline:  # type: ignore[operator]
            return runs  # type: ignore[return-value]
        await asyncio.sleep(0.5)


def _ended(events: list[object]) -> bool:
    return any(isinstance(e, RunCompleted) for e in events)


@pytest.mark.timeout(240)
async def test_quarantine_halts_live_runs_flags_ended_ones_and_touches_no_other(deployment: Deployment) -> None:
    d = deployment
    before = await _start(d, "before", 3)
    runs = await _until(d, lambda r: all(_ended(r.get(x, [])) for x in before), 60)
    assert all(_ended(runs[x]) for x in before)
    await asyncio.sleep(0.2)
    since = int(time.time() * 1000)
    live, ended, clean = await _start(d, "live", 6), await _start(d, "ended", 4), await _start(d, "clean", 4)

    def consumed(r: dict[str, list[object]]) -> bool:
        fed = all(any(isinstance(e, ToolCallCompleted) and e.tool == "calculator" for e in r.get(x, [])) for x in live)
        return fed and all(_ended(r.get(x, [])) for x in ended + clean)

    assert consumed(await _until(d, consumed, 60))

    record = await quarantine_tool(d.settings, "", "calculator", since, reason="injected instructions in results",
                                   by="test", quarantine_id="q1")  # fmt: skip
    assert sorted(record.halted_runs) == sorted(live)
    assert sorted(record.flagged_runs) == sorted(ended)

    def halted(r: dict[str, list[object]]) -> bool:
        return all(any(isinstance(e, RunHalted) for e in r.get(x, [])) for x in live)

    runs = await _until(d, halted, 60)
    for run_id in live:
        halt = next(e for e in runs[run_id] if isinstance(e, RunHalted))
        assert halt.limit == "kill_switch" and "quarantine q1" in halt.reason, halt
        assert not _ended(runs[run_id])
    for run_id in live + ended:
        flags = [e for e in runs[run_id] if isinstance(e, RunFlagged) and e.kind == "quarantine"]
        assert len(flags) == 1 and orjson.loads(flags[0].evidence_json)["quarantine_id"] == "q1", flags
    for run_id in before + clean:
        assert not any(isinstance(e, RunFlagged | RunHalted) for e in runs[run_id]), runs[run_id]
        assert _ended(runs[run_id])

    # Recorded, listed, and refused clearly when asked twice or for an unknown id.
    assert (await read_quarantines(d.settings))["q1"].released is False
    assert (
        await quarantine_command(d.settings, argparse.Namespace(quarantine_command="show", quarantine_id="nope")) == 2
    )
    with pytest.raises(QuarantineError, match="future"):
        await quarantine_tool(d.settings, "", "calculator", since + 3_600_000, reason="x", by="test")

    # Released (tool re-enabled): a halted run resumes and finishes.
    released = await release_quarantine(d.settings, "q1", by="test", enable_tool=True)
    assert released.released and sorted(released.halted_runs) == sorted(live)
    with pytest.raises(QuarantineError, match="already released"):
        await release_quarantine(d.settings, "q1", by="test", enable_tool=False)
    halt = next(e for e in runs[live[0]] if isinstance(e, RunHalted))
    await d.client.resume(live[0], "acme", halt.halt, 5, "quarantine lifted", requested_by="test")
    runs = await _until(d, lambda r: _ended(r.get(live[0], [])), 60)
    assert _ended(runs[live[0]])


class Hook:
    """A real HTTP endpoint that records what is POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, object]] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        )
        self.bodies.append(orjson.loads(await reader.readexactly(length)))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        await writer.drain()
        writer.close()


@pytest.mark.timeout(180)
async def test_the_monitor_disables_a_failing_tool_and_calls_the_webhook(deployment: Deployment) -> None:
    d = deployment
    hook = Hook()
    server = await asyncio.start_server(hook.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    await set_rule(d.settings, parse_rule({
        "rule_id": "tool-errors", "metric": "tool_error_rate", "threshold": 0.5, "group_by": "tool",
        "min_samples": 4, "window_s": 300, "action": "disable_tool", "webhook": f"http://127.0.0.1:{port}/hook",
    }), by="test")  # fmt: skip
    await set_judge_policy(d.settings, JudgePolicy("graded", rate=1.0), by="test")
    monitor = Monitor(d.settings, tick_s=0.2, lookback_s=120)
    stop = asyncio.Event()
    task = asyncio.create_task(monitor.run(stop))
    try:
        await _start(d, "clean", 3)
        await _start(d, "broken", 3)
        graded_ok = await d.client.request_run(RunRequest(task="[scenario:clean] what time is it in UTC?", tools=TOOLS,
                                                          tenant_id="graded"))  # fmt: skip
        graded_bad = await d.client.request_run(RunRequest(task="[scenario:refused] what time is it?", tools=TOOLS,
                                                           tenant_id="graded"))  # fmt: skip
        deadline = time.monotonic() + 90
        raised: list[AlertChanged] = []
        while time.monotonic() < deadline and not raised:
            await asyncio.sleep(0.5)
            assert not task.done(), task
            raised = [a for a in (await read_alerts(d.settings)).alerts.values() if a.raised]
        assert len(raised) == 1, raised  # convert_time only: get_current_time answered every call
        alert = raised[0]
        assert (alert.rule_id, alert.tool, alert.tenant_id) == ("tool-errors", "convert_time", "acme")
        assert alert.value > 0.5 and alert.samples >= 4
        assert (
            alert.action_taken.startswith("tool convert_time (platform) disabled")
            and "webhook 200" in alert.action_taken
        )
        catalog = await read_catalog(d.settings)
        entry = catalog.latest("", "convert_time")
        assert entry is not None and catalog.switched_off(entry) is not None
        assert hook.bodies and hook.bodies[0]["rule_id"] == "tool-errors" and hook.bodies[0]["raised"] is True

        # The judge graded both of the sampled tenant's runs, each in a judge run of its own.
        def judged(r: dict[str, list[object]]) -> bool:
            return all(any(isinstance(e, JudgeVerdict) for e in r.get(x, [])) for x in (graded_ok, graded_bad))

        runs = await _until(d, judged, 90)
        ok = next(e for e in runs[graded_ok] if isinstance(e, JudgeVerdict))
        bad = next(e for e in runs[graded_bad] if isinstance(e, JudgeVerdict))
        assert ok.graded and ok.passed and ok.judge_run_id == f"judge-{graded_ok}", ok
        assert bad.graded and not bad.passed and not bad.success, bad
        judge_calls = [e for e in runs[ok.judge_run_id] if isinstance(e, LlmCallRequested)]
        assert [c.tier for c in judge_calls] == ["judge"] and ok.tenant_id == "graded"
        assert not any(isinstance(e, JudgeVerdict) and e.tenant_id == "acme" for r in runs.values() for e in r)
        assert monitor.judge is not None and monitor.judge.requested == 2
    finally:
        stop.set()
        await task
        server.close()
