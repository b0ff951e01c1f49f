"""A run read back from the audit warehouse once its events have left the hot journal (retention,
a deleted segment): the warehouse's rows turned back into the journal's own event types, so
`runs show` and the gateway print and project them with the code that reads the journal.

What the warehouse never holds (capability tokens, delegations, approval HMACs: dropped by the
sink's converter) comes back empty; a column a row lacks (a field added after it was written) comes
back as its type's zero value. Rows are ordered by their journal position (partition, offset)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from agentstream.client.journal import JournalEntry
from agentstream.events import EVENT_TYPES, RunEvent

# A field's zero value by its annotation (the event dataclasses' annotations are strings).
_ZERO: dict[str, Any] = {"str": "", "int": 0, "float": 0.0, "bool": False, "bytes": b""}


def _zero(annotation: str) -> Any:
    if "None" in annotation:
        return None
    if annotation.startswith(("list", "tuple")):
        return [] if annotation.startswith("list") else ()
    if annotation.startswith("dict"):
        return {}
    return _ZERO.get(annotation, "")


def _millis(value: Any) -> int:
    if isinstance(value, dt.datetime):
        return int(value.timestamp() * 1000)
    return int(value or 0)


def event_from_row(row: Mapping[str, Any]) -> RunEvent | None:
    """One warehouse row as its journal event; None for a row of a type this version does not know."""
    cls = EVENT_TYPES.get(str(row.get("event_type") or ""))
    if cls is None or not issubclass(cls, RunEvent):
        return None
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        value = row.get(f.name)
        if value is not None:
            values[f.name] = value
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            values[f.name] = _zero(str(f.type))
    return cls(**values)


def entries_from_rows(rows: Iterable[Mapping[str, Any]]) -> list[JournalEntry]:
    """A run's rows as journal entries in journal order (each entry's offset its journal offset)."""

    def position(row: Mapping[str, Any]) -> tuple[int, int, int]:
        return (
            int(row.get("journal_partition") or 0),
            int(row.get("journal_offset") or 0),
            _millis(row.get("journal_time")),
        )

    entries: list[JournalEntry] = []
    for row in sorted(rows, key=position):
        event = event_from_row(row)
        if event is not None:
            entries.append(JournalEntry(event, int(row.get("journal_offset") or 0), _millis(row.get("journal_time"))))
    return entries


async def warehouse_entries(
    warehouse: Path, run_id: str, tenant_id: str | None, catalog: Mapping[str, str] | None = None
) -> list[JournalEntry]:
    """The run's events from the warehouse ([] when it holds none, or is not there at all); a
    tenant's read sees only that tenant's rows. `catalog`: when not the embedded one (S3, REST)."""
    from agentstream.audit import WarehouseUnavailable, run_history  # pyarrow and DuckDB on demand

    try:
        rows = await run_history(warehouse, run_id, tenant_id=tenant_id, catalog=catalog)
    except WarehouseUnavailable:
        return []
    return entries_from_rows(rows)
