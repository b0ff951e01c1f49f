"""Canary rings on the whole stack: a candidate orchestrator version is rolled out ring by ring;
its injected regression trips the version's tool error rate; the monitor rolls it back; new runs
start on the baseline again while the runs already started on the candidate finish on it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from agentstream.client.journal import RunRequest
from agentstream.client.scan import read_journal
from agentstream.events import AlertChanged, RunCompleted, RunEvent, RunStarted, ToolCallCompleted, ToolCallRequested
from agentstream.monitor.admin import read_alerts, set_rule
from agentstream.monitor.daemon import Monitor
from agentstream.monitor.rules import parse_rule
from agentstream.rollout.admin import promote, read_rollout, start_rollout
from agentstream.rollout.rings import ROLLED_BACK
from agentstream.stack import Deployment
from tests.harness import isolated_settings

CLOCK = {"name": "get_current_time", "arguments": {"timezone": "UTC"}}
SCENARIOS: dict[str, dict[str, Any]] = {
    "clock": {"turns": [{"tool_calls": [CLOCK]}, {"text": "It is late in UTC."}]},
    # Started on the candidate, still thinking when the rollback comes: it must finish on it.
    "slow": {"turns": [{"tool_calls": [CLOCK]}, {"delay_ms": 12000, "text": "It is late in UTC."}]},
}
CANDIDATE = "v2-regressed"


@pytest.fixture(scope="module")
async def deployment(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    home: Path = tmp_path_factory.mktemp("canary")
    settings, scen = await isolated_settings(kafka_bootstrap, home, "canary", SCENARIOS)
    env = {"AGENTSTREAM_ORCHESTRATOR_VERSIONS": "agentstream.doubles.canary:REGRESSED"}
    async with Deployment(settings, [scen], extra_env=env) as d:
        yield d


async def _runs(d: Deployment, scenario: str, tenant: str, count: int) -> list[str]:
    request = RunRequest(task=f"[scenario:{scenario}] what time is it in UTC?", tools=["get_current_time"],
                         tenant_id=tenant)  # fmt: skip
    return [await d.client.request_run(request) for _ in range(count)]


async def _until(
    d: Deployment, check: Callable[[dict[str, list[RunEvent]]], bool], timeout_s: float
) -> dict[str, list[RunEvent]]:
    deadline = time.monotonic() + timeout_s
    while True:
        runs = {r: [e.event for e in es] for r, es in (await read_journal(d.settings)).items()}
        if check(runs) or time.monotonic() > deadline:
            return runs
        await asyncio.sleep(0.5)


def _version(events: list[RunEvent]) -> str | None:
    return next((e.orchestrator_version for e in events if isinstance(e, RunStarted)), None)


def _ended(events: list[RunEvent]) -> bool:
    return any(isinstance(e, RunCompleted) for e in events)


@pytest.mark.timeout(300)
async def test_a_regressed_candidate_is_rolled_back_and_its_started_runs_finish_on_it(deployment: Deployment) -> None:
    d = deployment
    await set_rule(d.settings, parse_rule({
        "rule_id": "canary-errors", "metric": "tool_error_rate", "threshold": 0.5, "group_by": "version",
        "min_samples": 3, "window_s": 300, "action": "rollback",
    }), by="test")  # fmt: skip
    stop = asyncio.Event()
    monitor = asyncio.create_task(Monitor(d.settings, tick_s=0.2, lookback_s=120).run(stop))
    try:
        # Ring 1: only the internal tenant's new runs start on the candidate.
        await start_rollout(d.settings, CANDIDATE, "v1", ["staff"], "test")
        slow = await _runs(d, "slow", "staff", 1)
        outside = await _runs(d, "clock", "acme", 2)
        runs = await _until(d, lambda r: all(_version(r.get(x, [])) for x in slow + outside), 60)
        assert [_version(runs[x]) for x in slow] == [CANDIDATE]
        assert {_version(runs[x]) for x in outside} == {"v1"}
        # Ring 2 (read-only runs): acme's clock runs now start on the candidate, and fail their calls.
        assert (await promote(d.settings, "test")).ring_name == "read_only"
        ring2 = await _runs(d, "clock", "acme", 4)
        rollout = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert not monitor.done(), monitor
            rollout = await read_rollout(d.settings)
            if rollout is not None and rollout.status == ROLLED_BACK:
                break
            await asyncio.sleep(0.5)
        assert rollout is not None and rollout.status == ROLLED_BACK, rollout
        assert "canary-errors" in rollout.reason and CANDIDATE in rollout.reason
        alerts: list[AlertChanged] = []
        while not alerts and time.monotonic() < deadline + 10:  # recorded right after the rollback
            alerts = [a for a in (await read_alerts(d.settings)).alerts.values() if a.raised]
            await asyncio.sleep(0.2)
        assert [(a.version, a.action_taken) for a in alerts] == [(CANDIDATE, f"rollout of {CANDIDATE} rolled back")]

        # After the rollback: new runs start on the baseline; the started candidate run finishes on it.
        after = await _runs(d, "clock", "acme", 2)
        runs = await _until(d, lambda r: all(_ended(r.get(x, [])) for x in slow + after + ring2), 90)
        assert {_version(runs[x]) for x in ring2} == {CANDIDATE}
        assert {_version(runs[x]) for x in after} == {"v1"}
        assert _version(runs[slow[0]]) == CANDIDATE and _ended(runs[slow[0]])
        asked = [e for e in runs[slow[0]] if isinstance(e, ToolCallRequested)]
        assert asked and all("Mars/Olympus_Mons" in e.arguments_json for e in asked)  # decided by the candidate
        for run_id in after:
            results = [e for e in runs[run_id] if isinstance(e, ToolCallCompleted)]
            assert results and not any(e.is_error for e in results), results
    finally:
        stop.set()
        await monitor
