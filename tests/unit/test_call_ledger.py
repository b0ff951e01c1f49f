"""The call ledger's at-most-once rule, against a real RocksDB partition store: a call that must not
run twice is marked started in the state the shell writes before it starts the work, and a crash
after that ends the call with an error observation instead of running it again."""

from __future__ import annotations

from pathlib import Path

from agentstream import ids
from agentstream.calls import CallLedgerCore, concerns_tool_calls
from agentstream.events import (
    BudgetReserved,
    CancelRequested,
    Event,
    RunEvent,
    ToolCallAuthorized,
    ToolCallCompleted,
)
from agentstream.kafka.core import Outcome
from agentstream.kafka.state import PartitionStore

RUN = "run-1"
ONCE = "charge_card"  # the tool these tests treat as not idempotent


def authorized(index: int, tool: str) -> ToolCallAuthorized:
    call_id = ids.tool_call_id(RUN, 1, index)
    return ToolCallAuthorized(
        event_id=ids.authorized_id(call_id), run_id=RUN, tenant_id="acme", step=1, call_id=call_id,
        tool_call_id=f"tc{index}", tool=tool, tool_version="1", arguments_json="{}", idempotency_key=call_id,
        timeout_ms=1000, authorized_by="policy", expires_ms=0, capability="", delegation="",
    )  # fmt: skip


def completed(request: ToolCallAuthorized, content: str, *, is_error: bool = False) -> ToolCallCompleted:
    return ToolCallCompleted(
        event_id=ids.completed_event_id(request.call_id), run_id=RUN, tenant_id="acme", step=1,
        call_id=request.call_id, tool=request.tool, idempotency_key=request.idempotency_key,
        content=content, is_error=is_error, duration_ms=0.0,
    )  # fmt: skip


def interrupted(request: ToolCallAuthorized) -> list[RunEvent]:
    return [completed(request, "may have run before a crash; not retried (non-idempotent)", is_error=True)]


async def never_called(_request: ToolCallAuthorized, _clearances: object) -> list[RunEvent]:
    raise AssertionError("the shell runs work, not these tests")


def ledger() -> CallLedgerCore[ToolCallAuthorized]:
    return CallLedgerCore(
        "tool-executor",
        ToolCallAuthorized,
        lambda event: event.call_id if isinstance(event, ToolCallCompleted) else None,
        never_called,
        frozenset({"ToolCallCompleted"}),
        at_most_once=lambda request: request.tool == ONCE,
        interrupted=interrupted,
    )


def apply_and_commit(store: PartitionStore, events: list[Event], offset: int) -> Outcome:
    """What the shell does with a batch: apply live, then write state and offset together (step 3),
    and only then would it start the work (step 4)."""
    out = Outcome()
    for event in events:
        out.extend(ledger().apply(store, event, live=True))
    store.commit(offset)
    return out


def restart(store: PartitionStore, path: Path) -> tuple[PartitionStore, Outcome]:
    """A crash and a fresh process: the store is reopened from disk and the core resumes."""
    store.close()
    reopened = PartitionStore(path)
    out = ledger().resume(reopened)
    reopened.commit(None)
    return reopened, out


def test_an_interrupted_non_idempotent_call_becomes_an_error_observation_not_a_second_run(tmp_path: Path) -> None:
    path = tmp_path / "p000"
    store = PartitionStore(path)
    once, repeatable = authorized(0, ONCE), authorized(1, "lookup")
    handed_out = apply_and_commit(store, [once, repeatable], offset=2)
    assert [w.key for w in handed_out.work] == [once.call_id, repeatable.call_id]

    store, resumed = restart(store, path)  # both were handed to the shell; neither result journaled
    # The idempotent call is driven again, with the same key; the other is reported, not re-run.
    assert [w.key for w in resumed.work] == [repeatable.call_id]
    (result,) = resumed.emit
    assert isinstance(result, ToolCallCompleted) and result.call_id == once.call_id and result.is_error
    assert "not retried (non-idempotent)" in result.content
    assert result.event_id == ids.completed_event_id(once.call_id)  # the id a real result would have

    # The observation is read back like any result: the call is done, and stays done after a restart.
    apply_and_commit(store, [result, completed(repeatable, "42")], offset=4)
    store, again = restart(store, path)
    assert again.work == [] and again.emit == []
    assert list(store.keys_with_prefix("started/")) == []
    store.close()


def test_a_call_whose_batch_was_never_written_did_not_start_and_is_run_after_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "p000"
    store = PartitionStore(path)
    once = authorized(0, ONCE)
    out = ledger().apply(store, once, live=True)
    assert [w.key for w in out.work] == [once.call_id]
    # Crash between applying and step 3: nothing written, so (commit order) no work was started.
    store.discard_staged()
    store, resumed = restart(store, path)
    assert resumed.emit == []
    assert resumed.work == []  # and the request itself is re-read from the topic, not from the store
    replay = ledger().apply(store, once, live=True)
    assert [w.key for w in replay.work] == [once.call_id]
    store.close()


def test_a_result_or_a_cancel_clears_the_started_mark(tmp_path: Path) -> None:
    path = tmp_path / "p000"
    store = PartitionStore(path)
    first, second = authorized(0, ONCE), authorized(1, ONCE)
    apply_and_commit(store, [first, second], offset=2)
    assert len(list(store.keys_with_prefix("started/"))) == 2
    apply_and_commit(store, [completed(first, "charged")], offset=3)
    assert list(store.keys_with_prefix("started/")) == [f"started/{second.call_id}"]
    cancel = CancelRequested(
        event_id=ids.cancel_requested_id(RUN), run_id=RUN, tenant_id="acme", reason="stop", requested_by="t"
    )
    apply_and_commit(store, [cancel], offset=4)
    assert list(store.keys_with_prefix("started/")) == []
    store, resumed = restart(store, path)
    assert resumed.emit == [] and resumed.work == []
    store.close()


def reserved(call_id: str, kind: str) -> BudgetReserved:
    return BudgetReserved(
        event_id=f"{call_id}/reserved", run_id=RUN, tenant_id="acme", step=1, call_id=call_id, kind=kind,
        tool="" if kind == "model" else "lookup", reserved_usd=0.01, reserved_tokens=0, committed_usd=0.01,
        tenant_committed_usd=0.01, price_version="v1", decided_ms=0,
    )  # fmt: skip


def test_a_clearance_for_another_kind_of_call_is_not_recorded(tmp_path: Path) -> None:
    """The tool executor's ledger (processors/tool_executor/app.py) is not concerned by a model
    call's reservation, which every step has: it writes nothing for it (no key to delete later)."""
    core = CallLedgerCore(
        "tool-executor", ToolCallAuthorized,
        lambda event: event.call_id if isinstance(event, ToolCallCompleted) else None,
        never_called, frozenset({"ToolCallCompleted"}), requires=frozenset({"BudgetReserved"}),
        concerns=concerns_tool_calls,
    )  # fmt: skip
    store = PartitionStore(tmp_path / "p0")
    request = authorized(0, "lookup")
    assert core.apply(store, reserved("run-1/s1/llm", "model"), live=True).work == []
    assert store.staged_changes() == {}
    assert core.apply(store, request, live=True).work == []  # waits for its own reservation
    (work,) = core.apply(store, reserved(request.call_id, "tool"), live=True).work
    assert work.key == request.call_id
    store.close()
