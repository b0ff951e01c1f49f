"""Trajectory comparison masks only what legitimately differs between two runs of one scenario."""

from __future__ import annotations

from agentstream.client.journal import JournalEntry
from agentstream.events import ToolCallCompleted
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
