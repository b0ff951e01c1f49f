"""Per-tenant retention of the audit warehouse.

A tenant's setting is an `AuditRetentionSet` on the control topic (keyed `retention/<tenant>`, the
latest wins), tenants without one follow `AGENTSTREAM_WAREHOUSE_RETENTION_DAYS` (0: forever).
Applying it deletes, from every audit table with a tenant column, the tenant's rows from before the
cutoff: the start of the UTC day `days` days ago, so a whole (day, tenant) partition goes at once
and no data file is ever rewritten (rows are kept `days` to `days + 1` days). Then every older
snapshot is expired and the files only they referenced (data files, manifests, manifest lists) are
deleted from the disk. Commits race the live connector's: a conflict reloads and retries. Before any
row goes, the blobs of the runs that ended before their cutoff are deleted (run_blobs.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import And, BooleanExpression, Not, Or
from pyiceberg.manifest import ManifestEntryStatus
from pyiceberg.table import Table
from pyiceberg.transforms import DayTransform

from agentstream.audit.run_blobs import EVENTS_TABLE, BlobReport, EndedRun, delete_run_blobs, ended_runs
from agentstream.audit.warehouse import NAMESPACE, TENANT_COLUMN, Warehouse, before, equal, is_null, one_of
from agentstream.blobs.store import BlobStore
from agentstream.codec import AvroCodec, DecodeError
from agentstream.config import Settings
from agentstream.connect.journal import read_topic
from agentstream.events import AuditRetentionSet, Event
from agentstream.kafka.table import put_record
from agentstream.topics import CONTROL, load_topics

log = logging.getLogger(__name__)
DAY_MS = 86_400_000
COMMIT_TRIES = 8
# What the Iceberg sink's coordinator reads back from the latest snapshot that has it (its committed
# offsets): carried onto the retention's own snapshots so it never has to look past them.
CONNECTOR_PROPS = "kafka.connect."


def retention_key(tenant_id: str) -> str:
    return f"retention/{tenant_id}"


async def set_retention(settings: Settings, tenant_id: str, *, days: int, set_by: str) -> AuditRetentionSet:
    if days < 0:
        raise ValueError("retention days must not be negative (0 keeps a tenant's rows forever)")
    if not tenant_id:
        raise ValueError("a retention setting names a tenant")
    event = AuditRetentionSet(retention_key(tenant_id), tenant_id, int(days), set_by, int(time.time() * 1000))
    await put_record(settings, load_topics(settings.topic_prefix)[CONTROL].name, event)
    return event


def retention_of(events: Sequence[Event | None]) -> dict[str, int]:
    """Each tenant's latest setting, in topic order (a tombstone, None, is skipped: it names no tenant)."""
    out: dict[str, int] = {}
    for event in events:
        if isinstance(event, AuditRetentionSet):
            out[event.tenant_id] = event.days
    return out


def _read_settings(settings: Settings) -> dict[str, int]:
    codec = AvroCodec()
    events: list[Event | None] = []
    topic = load_topics(settings.topic_prefix)[CONTROL].name
    for msg in read_topic(settings.bootstrap_servers, settings.kafka_extra, topic):
        value = msg.value()
        if value is None:
            continue
        try:
            events.append(codec.decode(value))
        except DecodeError:
            continue  # another component's record this version cannot read: not a retention setting
    return retention_of(events)


async def read_retention(settings: Settings) -> dict[str, int]:
    """Every tenant's retention setting, the control topic read to its end."""
    return await asyncio.to_thread(_read_settings, settings)


def cutoff_ms(now_ms: int, days: int) -> int:
    """The start of the UTC day `days` days before `now_ms`: rows before it are deleted."""
    return (now_ms - days * DAY_MS) // DAY_MS * DAY_MS


@dataclass
class TableReport:
    table: str
    rows_deleted: dict[str, int] = field(default_factory=dict)  # tenant -> rows
    files_removed: int = 0
    skipped: str = ""


def _time_column(table: Table) -> str | None:
    """The column the table is partitioned by day on (journal_time, record_time)."""
    schema = table.schema()
    for part in table.spec().fields:
        if isinstance(part.transform, DayTransform):
            return schema.find_column_name(part.source_id)
    return None


def _ts(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat()


def delete_filter(
    time_column: str, policies: dict[str, int], default_days: int, now_ms: int
) -> BooleanExpression | None:
    """The rows retention removes: each configured tenant's before its cutoff, and every other
    tenant's (and rows of no tenant) before the default's; None when nothing expires."""
    parts: list[BooleanExpression] = [
        And(equal(TENANT_COLUMN, tenant), before(time_column, _ts(cutoff_ms(now_ms, days))))
        for tenant, days in sorted(policies.items())
        if days > 0
    ]
    if default_days > 0:
        older = before(time_column, _ts(cutoff_ms(now_ms, default_days)))
        if policies:
            others = Or(is_null(TENANT_COLUMN), Not(one_of(TENANT_COLUMN, set(policies))))
            parts.append(And(others, older))
        else:
            parts.append(older)
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else Or(*parts)


def _connector_props(table: Table) -> dict[str, str]:
    """The sink's offsets from the newest snapshot that carries them."""
    snapshot = table.current_snapshot()
    while snapshot is not None:
        props = {k: v for k, v in (snapshot.summary.additional_properties if snapshot.summary else {}).items()
                 if k.startswith(CONNECTOR_PROPS)}  # fmt: skip
        if props:
            return props
        snapshot = table.snapshot_by_id(snapshot.parent_snapshot_id) if snapshot.parent_snapshot_id else None
    return {}


def _retry(what: str, attempt: Any) -> Any:
    for tries in range(1, COMMIT_TRIES + 1):
        try:
            return attempt()
        except CommitFailedException:
            if tries == COMMIT_TRIES:
                raise
            log.info("%s: the connector committed first, retrying (%d)", what, tries)
            time.sleep(0.2 * tries)
    return None


def _files(table: Table, snapshot_ids: set[int]) -> set[str]:
    """The files these snapshots reference: manifest lists, manifests, and their live data files."""
    out: set[str] = set()
    for snapshot in table.metadata.snapshots:
        if snapshot.snapshot_id not in snapshot_ids:
            continue
        out.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(table.io):
            out.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False):
                if entry.status != ManifestEntryStatus.DELETED:
                    out.add(entry.data_file.file_path)
    return out


def _local(location: str) -> Path:
    return Path(location.removeprefix("file://").removeprefix("file:"))


def expire_and_purge(wh: Warehouse, name: str) -> int:
    """Expires every snapshot but the current one and deletes the files no remaining snapshot
    references (only those the expired ones did, inside the table's folder: a file the connector
    is writing and has not committed yet is never touched). The number of files deleted."""
    ident = (NAMESPACE, name)
    table = wh.catalog.load_table(ident)
    current = table.metadata.current_snapshot_id
    old = {s.snapshot_id for s in table.metadata.snapshots if s.snapshot_id != current}
    if not old:
        return 0
    candidates = _files(table, old)

    def expire() -> None:
        fresh = wh.catalog.load_table(ident)
        fresh.maintenance.expire_snapshots().by_ids(
            sorted(old & {s.snapshot_id for s in fresh.metadata.snapshots})
        ).commit()

    _retry(f"expiring snapshots of {name}", expire)
    table = wh.catalog.load_table(ident)
    keep = _files(table, {s.snapshot_id for s in table.metadata.snapshots})
    removed = 0
    if not table.location().startswith("file:") and "://" in table.location():
        # Object storage (S3): its own FileIO deletes, still only under the table's location.
        prefix = table.location().rstrip("/") + "/"
        for location in sorted(candidates - keep):
            if location.startswith(prefix):
                table.io.delete(location)
                removed += 1
        return removed
    root = _local(table.location()).resolve()
    for location in sorted(candidates - keep):
        path = _local(location).resolve()
        if root in path.parents and path.is_file():
            path.unlink()
            removed += 1
    return removed


def _count(wh: Warehouse, name: str, expr: BooleanExpression) -> dict[str, int]:
    """The rows the filter matches, per tenant (TableFormatError for Avro data files)."""
    counts: dict[str, int] = {}
    rows = wh.read(name, list(wh.table(name).scan(row_filter=expr).plan_files()), expr)
    for tenant in rows[TENANT_COLUMN].to_pylist():
        counts[str(tenant)] = counts.get(str(tenant), 0) + 1
    return counts


def apply_to_table(wh: Warehouse, name: str, policies: dict[str, int], default_days: int, now_ms: int) -> TableReport:
    report = TableReport(name)
    table = wh.table(name, reload=True)
    column = _time_column(table)
    if TENANT_COLUMN not in table.schema().column_names or column is None:
        report.skipped = "no tenant column or no day partition"
        return report
    expr = delete_filter(column, policies, default_days, now_ms)
    if expr is None:
        report.skipped = "every tenant's rows are kept forever"
        return report
    report.rows_deleted = _count(wh, name, expr)
    if report.rows_deleted:

        def delete() -> None:
            fresh = wh.catalog.load_table((NAMESPACE, name))
            props = _connector_props(fresh)
            with fresh.transaction() as tx:
                tx.delete(expr, snapshot_properties=props)
                # A delete's manifests still list the removed files with their column bounds (first
                # bytes of values); an append of nothing leaves those manifests out of the new
                # snapshot, and the purge below then deletes them with the expired snapshots.
                with tx.update_snapshot(snapshot_properties=props).fast_append():
                    pass

        _retry(f"retention on {name}", delete)
    report.files_removed = expire_and_purge(wh, name)
    return report


def apply_to_tables(
    warehouse: Path,
    policies: dict[str, int],
    default_days: int,
    now_ms: int,
    catalog: Mapping[str, str] | None = None,
) -> list[TableReport]:
    """Retention on every audit table, rows only. Blocking: call it in a thread."""
    wh = Warehouse(warehouse, catalog)
    try:
        return [apply_to_table(wh, name, policies, default_days, now_ms) for name in wh.table_names()]
    finally:
        wh.close()


def find_ended_runs(
    warehouse: Path, policies: dict[str, int], default_days: int, now_ms: int, catalog: Mapping[str, str] | None
) -> list[EndedRun]:
    """The runs that ended before their tenant's cutoff, as the warehouse holds them now. Blocking."""
    wh = Warehouse(warehouse, catalog)
    try:
        if EVENTS_TABLE not in wh.table_names():
            return []
        column = _time_column(wh.table(EVENTS_TABLE, reload=True))
        expired = None if column is None else delete_filter(column, policies, default_days, now_ms)
        return [] if expired is None else ended_runs(wh, expired)
    finally:
        wh.close()


@dataclass
class RetentionReport:
    tables: list[TableReport]
    blobs: BlobReport | None  # None: applied without a blob store

    def to_dict(self) -> dict[str, Any]:
        return {
            "tables": [t.__dict__ for t in self.tables],
            "blobs": None if self.blobs is None else self.blobs.to_dict(),
        }


async def apply_retention(
    warehouse: Path,
    policies: dict[str, int],
    default_days: int,
    now_ms: int,
    catalog: Mapping[str, str] | None = None,
    *,
    blobs: BlobStore | None,
) -> RetentionReport:
    """Retention on every audit table and on the blobs of the runs whose records it deletes.

    The runs are read and their blobs deleted before any row (run_blobs.py says why); a blob store
    error stops it there, with every row still in place. `blobs` None: rows only (a deployment
    that never stored a blob)."""
    report = None
    if blobs is not None:
        runs = await asyncio.to_thread(find_ended_runs, warehouse, policies, default_days, now_ms, catalog)
        report = await delete_run_blobs(blobs, runs)
    tables = await asyncio.to_thread(apply_to_tables, warehouse, policies, default_days, now_ms, catalog)
    return RetentionReport(tables, report)
