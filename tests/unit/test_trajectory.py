"""Trajectory comparison masks only what legitimately differs between two runs of one scenario; a
summary says where a run stands, a halt included."""

from __future__ import annotations

from agentstream.client.journal import JournalEntry
from agentstream.events import ResumeRequested, RunCancelled, RunEvent, RunHalted, RunStarted, ToolCallCompleted
from agentstream.trajectory import summarize
from bench.common import comparable_trajectory


def _observation(run_id: str, content: str) -> list[JournalEntry]:
    event = ToolCallCompleted(
        event_id=f"{run_id}/c1/done", run_id=run_id, tenant_id="t", step=1, call_id=f"{run_id}/c1",
        tool="convert_time", idempotency_key=f"{run_id}/c1", content=content, is_error=False, duration_ms=1.0,
    )  # fmt: skip
    return [JournalEntry(event=event, offset=0, timestamp_ms=0)]


def test_runs_either_side_of_midnight_compare_equal() -> None:
    before = _observation("run_a", '{"datetime": "2026-11-24T09:30:00+09:00", "run": "run_a"}')
    after = _observation("run_b", '{"datetime": "2026-11-25T09:30:00+09:00", "run": "run_b"}')
    assert comparable_trajectory(before, "run_a") == comparable_trajectory(after, "run_b")


def test_a_different_time_of_day_still_differs() -> None:
    early = _observation("run_a", '{"datetime": "2026-11-25T09:30:00+09:00"}')
    late = _observation("run_b", '{"datetime": "2026-11-25T10:30:00+09:00"}')
    assert comparable_trajectory(early, "run_a") != comparable_trajectory(late, "run_b")


def _entries(*events: RunEvent) -> list[JournalEntry]:
    return [JournalEntry(event=e, offset=i, timestamp_ms=i) for i, e in enumerate(events)]


_HALT = RunHalted("r/halt/1", "r", "t", steps=4, halt=1, limit="loop", reason="same call 3 times", resumable=True)
_STARTED = RunStarted("r/started", "r", "t", model="m", tools_json="[]", max_steps=8, system_prompt="")


def test_a_run_waiting_at_a_halt_summarizes_as_halted_with_its_limit() -> None:
    summary = summarize(_entries(_STARTED, _HALT))
    assert (summary.status, summary.reason, summary.steps) == ("halted", "loop: same call 3 times", 4)


def test_a_resumed_or_cancelled_halt_no_longer_reads_as_halted() -> None:
    resumed = ResumeRequested("r/resume/1", "r", "t", halt=1, add_steps=5, reason="go on", requested_by="cli")
    assert summarize(_entries(_STARTED, _HALT, resumed)).status == "running"
    cancelled = RunCancelled("r/cancelled", "r", "t", steps=4, reason="enough")
    assert summarize(_entries(_STARTED, _HALT, cancelled)).status == "cancelled"
