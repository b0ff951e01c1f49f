"""A real local Iceberg warehouse shaped like the journal sink's: a SQLite SQL catalog named
`iceberg` at `<warehouse>/catalog.db`, table `audit.events` partitioned by day(journal_time) and
tenant_id, every column optional, one row per journal event with the converter's column names
(schemas/*.avsc plus event_type and journal_time), Parquet data files."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import Table
from pyiceberg.transforms import DayTransform

from agentstream.audit.views import EVENT_COLUMNS
from agentstream.audit.warehouse import NAMESPACE
from agentstream.connect.sink import CATALOG_NAME

EXTRA_COLUMNS: dict[str, pa.DataType] = {"arguments_json": pa.string(), "final_answer": pa.string()}
DAY = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)


def catalog(warehouse: Path) -> SqlCatalog:
    warehouse.mkdir(parents=True, exist_ok=True)
    return SqlCatalog(CATALOG_NAME, uri=f"sqlite:///{warehouse / 'catalog.db'}", warehouse=str(warehouse))


def schema(columns: dict[str, pa.DataType]) -> pa.Schema:
    return pa.schema([pa.field(name, kind, nullable=True) for name, kind in columns.items()])


def create_events(warehouse: Path, columns: dict[str, pa.DataType] | None = None) -> Table:
    cat = catalog(warehouse)
    cat.create_namespace_if_not_exists(NAMESPACE)
    table = cat.create_table(
        (NAMESPACE, "events"),
        schema=schema(columns or {**EVENT_COLUMNS, **EXTRA_COLUMNS}),
        properties={"write.format.default": "parquet"},
    )
    with table.update_spec() as spec:
        spec.add_field("journal_time", DayTransform(), "journal_time_day")
        spec.add_identity("tenant_id")
    return cat.load_table((NAMESPACE, "events"))


def append(table: Table, rows: list[dict[str, Any]]) -> list[str]:
    """Adds the rows as one Parquet file per (day, tenant) partition, as the sink writes them
    (pyiceberg's own append needs its Rust extension to compute a day transform). The files' paths."""
    paths = append_files(table, rows)
    table.add_files(paths)
    return paths


def append_files(table: Table, rows: list[dict[str, Any]]) -> list[str]:
    """The Parquet files `append` adds, written and not added yet."""
    arrow_schema = table.schema().as_arrow()
    groups: dict[tuple[dt.date, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["journal_time"].date(), row["tenant_id"]), []).append(row)
    data = Path(table.location().removeprefix("file:")) / "data"
    data.mkdir(parents=True, exist_ok=True)
    paths = []
    for (day, tenant), group in sorted(groups.items()):
        path = data / f"{day}-{tenant}-{uuid.uuid4().hex}.parquet"
        pq.write_table(
            pa.Table.from_pylist([{n: r.get(n) for n in arrow_schema.names} for r in group], arrow_schema), path
        )
        paths.append(str(path))
    return paths


def run_events(
    tenant: str, run: str, at: dt.datetime, *, irreversible: bool = True, auto: bool = False
) -> list[dict[str, Any]]:
    """One completed run: a model call, a tool call, two settled costs. The tool call is irreversible
    and approved by a person (or, `auto`, by the tenant's policy), or read-only and allowed, with the
    events the policy gate writes in each case."""
    base = {"run_id": run, "tenant_id": tenant}
    events: list[dict[str, Any]] = []

    def add(event_type: str, **fields: Any) -> None:
        stamp = at + dt.timedelta(milliseconds=10 * len(events))
        events.append(
            {**base, **fields, "event_type": event_type, "event_id": f"{run}-{len(events)}", "journal_time": stamp}
        )

    call = {"step": 1, "call_id": f"{run}-t1", "tool": "transfer_funds"}
    add("RunRequested", task=f"task of {run}", model="scripted")
    add("LlmCallRequested", step=1, call_id=f"{run}-m1", model="scripted", tier="standard")
    add("LlmCallCompleted", step=1, call_id=f"{run}-m1", provider="scripted", model="scripted", input_tokens=100,
        output_tokens=20, cached_input_tokens=0, latency_ms=12.5, attempts=1, finish_reason="tool_calls")  # fmt: skip
    add("BudgetSettled", step=1, call_id=f"{run}-m1", kind="llm", model="scripted", cost_usd=0.25, released_usd=0.0)
    add("ToolCallRequested", **call, tool_call_id="tc1", arguments_json='{"amount": 10}')
    if irreversible and not auto:
        add("PolicyDecided", **call, tool_version="1", tier="irreversible", decision="needs_approval", rule="tier")
        add("ApprovalRequested", **call, approval_id=f"{run}-a1", tier="irreversible", reason="irreversible")
        add("ApprovalDecided", call_id=f"{run}-t1", approval_id=f"{run}-a1", approved=True,
            decided_by=f"alice@{tenant}", reason="ok")  # fmt: skip
        add("ToolCallAuthorized", **call, authorized_by=f"alice@{tenant}", rule="approval", reason="approved")
    elif irreversible:
        add("ToolCallAuthorized", **call, authorized_by="policy", rule="auto_approve",
            reason="transfer_funds is irreversible; this tenant's policy approves it")  # fmt: skip
    else:
        add("ToolCallAuthorized", **call, authorized_by="policy", rule="tier", reason="transfer_funds is read-only")
    add("ToolCallCompleted", **call, is_error=False, duration_ms=3.0)
    add("BudgetSettled", **call, kind="tool", cost_usd=0.5, released_usd=0.0)
    add("RunCompleted", steps=2, final_answer="done", reason="answered")
    return events


def flagged_run(tenant: str, run: str, at: dt.datetime) -> list[dict[str, Any]]:
    """A run the loop detector halted: the same call three times."""
    base = {"run_id": run, "tenant_id": tenant}
    return [
        {**base, "event_type": "RunRequested", "event_id": f"{run}-0", "journal_time": at, "task": "loop"},
        {**base, "event_type": "LoopDetected", "event_id": f"{run}-1", "journal_time": at + dt.timedelta(seconds=1),
         "step": 3, "kind": "repeated_call", "action": "halt", "signature": "abc", "count": 3},
        {**base, "event_type": "EvalVerdict", "event_id": f"{run}-1v", "journal_time": at + dt.timedelta(seconds=1),
         "step": 3, "check_name": "repetition", "severity": "warning", "reason": "the same call and result",
         "evidence_json": "{}", "checks_version": "1"},
        {**base, "event_type": "RunHalted", "event_id": f"{run}-2", "journal_time": at + dt.timedelta(seconds=2),
         "steps": 3, "reason": "loop"},
    ]  # fmt: skip


def compacted_run(tenant: str, run: str, at: dt.datetime) -> list[dict[str, Any]]:
    """A run whose prompt was compacted twice: old tool results cleared, then the old turns
    summarized by a compaction model call (LlmCallRequested purpose "compaction")."""
    base = {"run_id": run, "tenant_id": tenant}
    summarizing = {"step": 4, "call_id": f"{run}/s0004/compact02"}
    rows: list[tuple[str, dict[str, Any]]] = [
        ("RunRequested", {"task": "research", "model": "scripted"}),
        ("LlmCallRequested", {"step": 1, "call_id": f"{run}/s0001/llm", "tier": "small", "purpose": "step"}),
        ("ContextCompacted", {"step": 2, "compaction": 1, "kind": "clear", "boundary": 5, "cleared_json": '["h1","h2"]',
                              "summary": "", "summary_call_id": "", "tokens_before": 70_000, "tokens_after": 40_000,
                              "reason": "over the trigger"}),
        ("LlmCallRequested", {**summarizing, "tier": "small", "purpose": "compaction"}),
        ("LlmCallCompleted", {**summarizing, "provider": "scripted", "input_tokens": 9_000, "output_tokens": 80}),
        ("ContextCompacted", {"step": 4, "compaction": 2, "kind": "summarize", "boundary": 9, "cleared_json": "[]",
                              "summary": "fetched: p1", "summary_call_id": summarizing["call_id"],
                              "tokens_before": 66_000, "tokens_after": 6_000, "reason": "still over half"}),
        ("LlmCallRequested", {"step": 5, "call_id": f"{run}/s0005/llm", "tier": "small"}),  # v2: no purpose
        ("RunCompleted", {"steps": 5, "final_answer": "done", "reason": "answered"}),
    ]  # fmt: skip
    return [
        {**base, **fields, "event_type": kind, "event_id": f"{run}-{i}", "journal_time": at + dt.timedelta(seconds=i)}
        for i, (kind, fields) in enumerate(rows)
    ]
