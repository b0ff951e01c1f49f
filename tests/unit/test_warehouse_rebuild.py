"""A run read back from audit warehouse rows: the journal's own event types again, in journal
order, with what the sink drops (capability tokens, delegations) empty and nothing else lost."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from agentstream.client.warehouse import entries_from_rows, event_from_row
from agentstream.events import LlmCallCompleted, RunCompleted, RunEvent, RunRequested, ToolCallAuthorized
from agentstream.trajectory import summarize

RUN, TENANT = "run-1", "acme"
BASE = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


def _events() -> list[RunEvent]:
    return [
        RunRequested(event_id=f"{RUN}/req", run_id=RUN, tenant_id=TENANT, task="look up ACME", model="m",
                     tools=["crm_lookup"], max_steps=5, idempotency_key="k", labels={"team": "ops"}, budget_usd=1.5),
        LlmCallCompleted(event_id=f"{RUN}/llm/1", run_id=RUN, tenant_id=TENANT, step=1, call_id="c1", provider="p",
                         model="m", text="", tool_calls_json="[]", finish_reason="stop", input_tokens=10,
                         output_tokens=3, cached_input_tokens=0, latency_ms=1.5, attempts=1),
        ToolCallAuthorized(event_id=f"{RUN}/auth/1", run_id=RUN, tenant_id=TENANT, step=1, call_id="c2",
                           tool_call_id="t1", tool="crm_lookup", tool_version="1", arguments_json="{}",
                           idempotency_key="i", timeout_ms=1000, authorized_by="policy", expires_ms=5,
                           capability="SECRET-CAPABILITY", delegation="SECRET-DELEGATION", rule="allow"),
        RunCompleted(event_id=f"{RUN}/done", run_id=RUN, tenant_id=TENANT, steps=1, final_answer="ACME is active",
                     reason="answered"),
    ]  # fmt: skip


def _row(event: RunEvent, offset: int) -> dict[str, Any]:
    """What the journal's sink writes: the event's fields, its type, its journal position and time,
    without the fields the converter drops."""
    record = {k: v for k, v in event.to_record().items() if k not in ("capability", "delegation")}
    time = BASE + dt.timedelta(milliseconds=offset)
    return {**record, "event_type": event.type_name, "journal_partition": 3, "journal_offset": offset,
            "journal_time": time}  # fmt: skip


def test_rows_come_back_as_the_journal_events_in_journal_order() -> None:
    events = _events()
    rows = [_row(e, 100 + i) for i, e in enumerate(events)]
    entries = entries_from_rows(reversed(rows))  # the warehouse answers in no particular order
    assert [e.event for e in entries][:2] == events[:2]
    assert [e.offset for e in entries] == [100, 101, 102, 103]
    assert entries[0].timestamp_ms == int(BASE.timestamp() * 1000) + 100
    authorized = entries[2].event
    assert isinstance(authorized, ToolCallAuthorized)
    # The dropped bearer material comes back empty; everything else is the journal's.
    assert (authorized.capability, authorized.delegation) == ("", "")
    assert dataclasses.replace(authorized, capability="SECRET-CAPABILITY", delegation="SECRET-DELEGATION") == events[2]
    assert entries[3].event == events[3]
    summary = summarize(entries)
    assert (summary.tenant_id, summary.task) == (TENANT, "look up ACME")


def test_missing_columns_take_the_field_default_and_unknown_types_are_skipped() -> None:
    row = _row(_events()[0], 1)
    for name in ("labels", "budget_usd", "api_key_id"):  # columns the table had not grown yet
        del row[name]
    event = event_from_row(row)
    assert isinstance(event, RunRequested)
    assert (event.labels, event.budget_usd, event.api_key_id) == ({}, 0.0, "")
    assert event_from_row({**row, "event_type": "SomethingNewer"}) is None
    assert event_from_row({**row, "event_type": "ProcessorStatus"}) is None  # not a run's event
    assert entries_from_rows([{**row, "event_type": None}]) == []
