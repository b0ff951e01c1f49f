"""State follows live runs: every core deletes a run's state when it ends and keeps only a marker,
for a bounded number of ended runs per partition, that still turns away a late duplicate. Driven
through the real cores over real partition stores (bench/state_footprint.py's in-process
platform: every emitted event is read back by every core, as the journal would)."""

from __future__ import annotations

from pathlib import Path

from agentstream import ids
from agentstream.calls import CallLedgerCore
from agentstream.events import (
    CancelRequested,
    Event,
    LlmCallCompleted,
    LlmCallRequested,
    RunCancelled,
    RunCompleted,
    RunEvent,
    RunRequested,
    RunStarted,
    ToolCallAuthorized,
    ToolCallRequested,
)
from agentstream.kafka.state import EndedRuns, PartitionStore
from bench.state_footprint import Platform

PER_RUN_PREFIXES = (b"run/", b"active/", b"pending/", b"clear/", b"started/", b"done/", b"call/", b"awaiting/",
                    b"taint/", b"undecided/", b"settled/")  # fmt: skip


def _held(platform: Platform) -> dict[str, dict[bytes, bytes]]:
    return {name: store.committed() for name, store in platform.stores.items()}


async def test_ended_runs_leave_only_markers_and_the_markers_are_bounded(tmp_path: Path) -> None:
    keep = 5
    platform = Platform(tmp_path, keep)
    for i in range(30):
        appended = await platform.run(f"run_{i:03d}")
        assert any(isinstance(e, RunCompleted) for e in appended)  # each run really ran to its end
    for name, held in _held(platform).items():
        per_run = [k for k in held if k.startswith(PER_RUN_PREFIXES)]
        assert per_run == [], (name, per_run)
        markers = [k for k in held if not k.startswith(b"tenant/")]
        # `keep` markers (lookup + order) and the sequence counter, whatever the number of runs.
        assert len(markers) == 2 * keep + 1, (name, sorted(markers))
    platform.close()


async def test_a_late_duplicate_of_an_ended_run_is_turned_away_by_every_core(tmp_path: Path) -> None:
    platform = Platform(tmp_path, keep=5)
    for i in range(3):
        await platform.run(f"run_{i:03d}")
    last: list[Event] = [e for e in platform.journal if isinstance(e, RunEvent) and e.run_id == "run_002"]
    duplicates = [
        e for e in last
        if isinstance(e, RunRequested | RunStarted | LlmCallRequested | ToolCallRequested | ToolCallAuthorized)
    ]  # fmt: skip
    assert {type(e) for e in duplicates} == {RunRequested, RunStarted, LlmCallRequested, ToolCallRequested,
                                             ToolCallAuthorized}  # fmt: skip
    before = _held(platform)
    # Re-emitted after the end (a writer replaying a batch it had not committed): nothing is
    # decided, reserved or called again, and no state is left behind.
    appended = await platform.feed(*duplicates)
    assert appended == duplicates
    assert _held(platform) == before
    platform.close()


async def test_past_the_bound_a_duplicate_request_counts_as_new(tmp_path: Path) -> None:
    """The documented limit: the marker of a run that ended `keep` runs ago is gone."""
    platform = Platform(tmp_path, keep=2)
    for i in range(4):
        await platform.run(f"run_{i:03d}")
    first = next(e for e in platform.journal if isinstance(e, RunRequested) and e.run_id == "run_000")
    recent = next(e for e in platform.journal if isinstance(e, RunRequested) and e.run_id == "run_003")
    assert await platform.feed(recent) == [recent]
    assert any(isinstance(e, RunStarted) for e in await platform.feed(first))
    platform.close()


async def _never(_request: LlmCallRequested, _clearances: object) -> list[RunEvent]:
    raise AssertionError("nothing is called here")


def test_a_result_that_lands_after_its_run_was_cancelled_leaves_no_key(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p0")
    core = CallLedgerCore("model-invoker", LlmCallRequested,
                          lambda e: e.call_id if isinstance(e, LlmCallCompleted) else None,
                          _never, frozenset({"LlmCallCompleted"}), closed_keep=10)  # fmt: skip
    run, call = "run_x", ids.llm_call_id("run_x", 1)
    events: list[Event] = [
        LlmCallRequested(ids.requested_event_id(call), run, "t", 1, call, "m", "[]", "[]", 100),
        CancelRequested(ids.cancel_requested_id(run), run, "t", "stop", "cli"),
        RunCancelled(ids.terminal_id(run), run, "t", 1, "stop"),
        # The call was in flight when the run was cancelled; its result lands after the end.
        LlmCallCompleted(
            ids.completed_event_id(call), run, "t", 1, call, "p", "m", "ok", "[]", "stop", 1, 1, 0, 1.0, 1
        ),
    ]
    for offset, event in enumerate(events, 1):
        core.apply(store, event, live=False)
        store.commit(offset)
    assert sorted(store.committed()) == [b"closed/#/000000000001", b"closed/#next", b"closed/run_x"]
    store.close()


def test_ended_runs_evicts_the_oldest_marker_first_and_marks_once(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p0")
    ended = EndedRuns("ended/", keep=2)
    for run in ("a", "b", "b", "c"):
        ended.mark(store, run)
    store.commit(1)
    assert [r for r in "abc" if ended.ended(store, r)] == ["b", "c"]
    assert len(store.committed()) == 2 * 2 + 1
    store.close()
