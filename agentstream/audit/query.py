"""Audit queries: one SQL SELECT run by DuckDB over the warehouse's tables, read as Arrow.

Isolation does not depend on the SQL: a tenant's query runs in a fresh in-memory DuckDB that holds
only that tenant's rows (scanned with a tenant filter, checked again row by row), so no WHERE,
UNION, subquery or view can reach another tenant's. The database can touch no file (external access
off: no read_parquet, COPY, ATTACH, INSTALL or LOAD) and its settings are locked before the query
runs (no SET). Only the tables and views a query names are scanned."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import logging
import math
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import orjson

from agentstream.audit.errors import AuditQueryError, WarehouseUnavailable
from agentstream.audit.views import VIEWS, fill_missing
from agentstream.audit.warehouse import Warehouse, equal

log = logging.getLogger(__name__)
EVENTS = "events"
# Per query: enough for a tenant's month of events, not enough to take the process down.
MEMORY_LIMIT = "2GB"
THREADS = 2
BATCH_ROWS = 2048
SANDBOX_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "enable_external_access": False,
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
    "memory_limit": MEMORY_LIMIT,
    "threads": THREADS,
}


@dataclass(frozen=True)
class AuditResult:
    columns: list[str]
    rows: list[list[Any]]  # JSON-safe: timestamps ISO 8601, bytes base64
    truncated: bool


def json_safe(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return str(value)  # intervals, UUIDs


def _scrub(message: str, warehouse: Path) -> str:
    """An error message safe for a tenant: no path of the warehouse, no quoted absolute path."""
    for root in {str(warehouse), str(warehouse.resolve())}:
        message = message.replace(root, "<warehouse>")
    message = re.sub(r"'/[^']*'", "'<path>'", re.sub(r'"/[^"]*"', '"<path>"', message))
    return (message.splitlines() or [""])[0][:500]


def _parser() -> duckdb.DuckDBPyConnection:
    # Never the module's default connection: DuckDB binds table functions while listing a query's
    # tables (it sniffed a CSV file to do so), and the default connection may read any file.
    con = duckdb.connect(config=SANDBOX_CONFIG)
    con.execute("SET lock_configuration = true")
    return con


def _walk(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        if node.get("type") == "BASE_TABLE" and isinstance(node.get("table_name"), str):
            found.add(node["table_name"].lower())
        for value in node.values():
            _walk(value, found)
    elif isinstance(node, list):
        for value in node:
            _walk(value, found)


def referenced(sql: str) -> set[str]:
    """Exactly one SELECT, and the table and view names it reads (a CTE's name too: harmless, as
    it only makes a same-named table load). Parsed, never bound: nothing is read to find them."""
    con = _parser()
    try:
        statements = con.extract_statements(sql)
        if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
            raise AuditQueryError("an audit query is exactly one SELECT statement (WITH ... SELECT included)")
        row = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    except duckdb.Error as exc:
        raise AuditQueryError(f"bad SQL: {str(exc).splitlines()[0][:300]}") from None
    finally:
        con.close()
    tree = orjson.loads(row[0]) if row else {}
    if tree.get("error"):
        raise AuditQueryError(f"bad SQL: {str(tree.get('error_message', ''))[:300]}")
    found: set[str] = set()
    _walk(tree, found)
    return found


def available(wh: Warehouse, tenant_id: str | None) -> dict[str, str]:
    """Every name a query may read -> "table" or "view": a tenant sees only tables with a tenant column."""
    tables = [n for n in wh.table_names() if tenant_id is None or wh.has_tenant_column(n)]
    names = {name: "table" for name in tables}
    if EVENTS in names:
        names.update({view: "view" for view in VIEWS})
    return names


@dataclass
class Sandbox:
    """One query's database: the tables it names, scanned for one tenant (or all, for an operator)."""

    wh: Warehouse
    tenant_id: str | None
    con: duckdb.DuckDBPyConnection = field(init=False)

    def __post_init__(self) -> None:
        self.con = duckdb.connect(config=SANDBOX_CONFIG)

    def load(self, names: set[str]) -> None:
        known = available(self.wh, self.tenant_id)
        tables = {n for n in names if known.get(n) == "table"}
        views = [v for v in VIEWS if v in names and v in known]
        if views:
            tables.add(EVENTS)
        for name in sorted(tables):
            rows = self.wh.scan(name, self.tenant_id)
            self.con.register(name, fill_missing(rows) if name == EVENTS else rows)
        for view in views:
            self.con.execute(f"CREATE VIEW {view} AS {VIEWS[view][0]}")
        # Days and times in UTC whatever the host's zone; then no setting can change any more
        # (external access, memory, threads, this zone).
        self.con.execute("SET TimeZone = 'UTC'")
        self.con.execute("SET lock_configuration = true")

    def close(self) -> None:
        self.con.close()
        self.wh.close()

    def fetch(self, sql: str, max_rows: int) -> AuditResult:
        reader = self.con.sql(sql).to_arrow_reader(BATCH_ROWS)
        columns = list(reader.schema.names)
        rows: list[list[Any]] = []
        for batch in reader:
            for record in batch.to_pylist():
                if len(rows) == max_rows:
                    return AuditResult(columns, rows, truncated=True)
                rows.append([json_safe(record[c]) for c in columns])
        return AuditResult(columns, rows, truncated=False)


async def run_query(
    warehouse: Path,
    sql: str,
    *,
    tenant_id: str | None,
    max_rows: int = 10_000,
    timeout_s: float = 30.0,
    catalog: Mapping[str, str] | None = None,
) -> AuditResult:
    """One SELECT over the audit tables and views; tenant_id None: an operator's, every tenant's rows.
    At most `max_rows` rows (`truncated` says more matched); past `timeout_s` it is interrupted."""
    try:
        names = referenced(sql)
    except AuditQueryError as exc:
        raise AuditQueryError(_scrub(str(exc), warehouse)) from None
    stop = threading.Event()
    box: dict[str, Sandbox] = {}
    late = AuditQueryError(f"the query ran past its {timeout_s:g}s limit and was stopped")

    def work() -> AuditResult:
        try:
            sandbox = box["s"] = Sandbox(Warehouse(warehouse, catalog), tenant_id)
            sandbox.load(names)
            if stop.is_set():  # the time ran out during the scan
                raise late
            return sandbox.fetch(sql, max(0, max_rows))
        except duckdb.InterruptException:
            raise late from None
        except duckdb.Error as exc:
            raise AuditQueryError(_scrub(str(exc), warehouse)) from None
        except OSError as exc:  # a data file gone under the scan (retention just deleted it)
            raise WarehouseUnavailable(
                f"the warehouse changed during the query, try again ({type(exc).__name__})"
            ) from None
        except (AuditQueryError, WarehouseUnavailable):
            raise
        except Exception as exc:
            # pyiceberg's own errors name files: the operator's log gets them, the caller does not.
            log.exception("audit query failed reading the warehouse")
            raise WarehouseUnavailable(f"the warehouse could not be read ({type(exc).__name__})") from None
        finally:
            if "s" in box:
                box["s"].close()

    task = asyncio.ensure_future(asyncio.to_thread(work))
    try:
        return await asyncio.wait_for(asyncio.shield(task), timeout_s)
    except TimeoutError:
        stop.set()
        # Until the thread ends: an interrupt reaching DuckDB between two queries' steps is lost.
        while not task.done():
            if "s" in box:
                with contextlib.suppress(duckdb.Error):  # closed in the same instant
                    box["s"].con.interrupt()
            await asyncio.wait({task}, timeout=0.1)
        if not task.cancelled() and task.exception() is None:
            return task.result()  # it finished in the same instant: no reason to drop it
        raise late from None


def _history(
    warehouse: Path, run_id: str, tenant_id: str | None, catalog: Mapping[str, str] | None
) -> list[dict[str, Any]]:
    try:
        wh = Warehouse(warehouse, catalog)
    except WarehouseUnavailable:
        return []
    try:
        if EVENTS not in wh.table_names():
            return []
        rows = wh.scan(EVENTS, tenant_id, equal("run_id", run_id))
    finally:
        wh.close()
    # Journal order: a run's events share one journal partition, and the sink records each one's
    # offset; its append time orders rows written before the sink recorded offsets.
    keys = [(c, "ascending") for c in ("journal_partition", "journal_offset", "journal_time") if c in rows.column_names]
    if keys:
        rows = rows.sort_by(keys)
    return [{k: v for k, v in row.items() if v is not None} for row in rows.to_pylist()]


async def run_history(
    warehouse: Path, run_id: str, *, tenant_id: str | None, catalog: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """One run's events in journal order, each a row's non-null columns as Python values (timestamps
    as aware datetimes); [] when the warehouse has none of them, or when the run is another tenant's."""
    return await asyncio.to_thread(_history, warehouse, run_id, tenant_id, catalog)


def _describe(warehouse: Path, tenant_id: str | None, catalog: Mapping[str, str] | None) -> list[dict[str, Any]]:
    sandbox = Sandbox(Warehouse(warehouse, catalog), tenant_id)
    try:
        known = available(sandbox.wh, tenant_id)
        sandbox.load(set(known))
        out: list[dict[str, Any]] = []
        for name, kind in sorted(known.items(), key=lambda item: (item[1], item[0])):
            count = sandbox.con.execute(f'SELECT count(*) FROM "{name}"').fetchone()
            out.append({"name": name, "kind": kind, "rows": int(count[0]) if count else 0})
        return out
    finally:
        sandbox.close()


async def describe(
    warehouse: Path, *, tenant_id: str | None, catalog: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Every table and view a query may read, with its row count."""
    return await asyncio.to_thread(_describe, warehouse, tenant_id, catalog)
