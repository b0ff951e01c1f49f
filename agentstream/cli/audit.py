"""`agentstream audit sql | tables | retention`: the audit warehouse, as an operator.

These commands read the local warehouse directory (`AGENTSTREAM_WAREHOUSE_DIR`) and, for
retention, the control topic with the operator's Kafka credentials; tenants query their own rows
through the run API instead. Exit codes: 0 done, 1 no warehouse (yet), 2 a query that cannot run."""

from __future__ import annotations

import argparse
import csv
import getpass
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from agentstream.config import Settings
from agentstream.connect.location import reader_catalog
from agentstream.settings import WarehouseSettings, load


def add_audit_parser(sub: Any) -> None:
    audit = sub.add_parser("audit", help="query the audit warehouse (operator: reads the local warehouse)")
    actions = audit.add_subparsers(dest="audit_command", required=True)
    sql = actions.add_parser("sql", help="one SQL SELECT over the audit tables and views (DuckDB)")
    sql.add_argument("query", nargs="?", help="the SELECT (or --named)")
    sql.add_argument("--named", metavar="NAME", help="a documented query instead (see `audit sql --list`)")
    sql.add_argument("--param", action="append", default=[], metavar="K=V", help="a named query's parameter")
    sql.add_argument("--list", action="store_true", help="list the named queries and their parameters")
    sql.add_argument("--tenant", help="only this tenant's rows, as the tenant's own query would see them")
    out = sql.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true")
    out.add_argument("--csv", action="store_true")
    sql.add_argument("--max-rows", type=int, default=10_000, help="at most this many rows (default 10000)")
    sql.add_argument("--timeout", type=float, default=30.0, help="stop the query after this many seconds")
    tables = actions.add_parser("tables", help="the tables and views a query can read, with row counts")
    tables.add_argument("--tenant", help="what this tenant's queries see")
    tables.add_argument("--json", action="store_true")

    retention = actions.add_parser("retention", help="how long the warehouse keeps each tenant's rows")
    steps = retention.add_subparsers(dest="retention_command", required=True)
    put = steps.add_parser("set", help="a tenant's retention in days (0: forever), on the control topic")
    put.add_argument("tenant")
    put.add_argument("--days", type=int, required=True)
    steps.add_parser("show", help="every tenant's setting and the default")
    apply = steps.add_parser(
        "apply", help="delete rows past their tenant's retention and their files, and the blobs of the runs "
        "that ended before it",
    )  # fmt: skip
    apply.add_argument("--now-ms", type=int, default=None, help="the time to apply it at (default: now)")
    apply.add_argument("--json", action="store_true")
    audit.set_defaults(handler=audit_command)


def _warehouse() -> Path:
    return load(WarehouseSettings).resolved_warehouse(Settings.from_env().home)


def _catalog() -> dict[str, str] | None:
    """pyiceberg's catalog properties when not the embedded default (S3 files, a REST catalog)."""
    return reader_catalog(Settings.from_env())


def _params(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--param takes K=V, not {pair!r}")
        out[key] = value
    return out


def _print_table(columns: list[str], rows: list[list[Any]]) -> None:
    cells = [
        [("" if v is None else v if isinstance(v, str) else orjson.dumps(v).decode()) for v in row] for row in rows
    ]
    widths = [min(60, max([len(c), *(len(r[i]) for r in cells)])) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v[:w].ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


async def _sql(args: argparse.Namespace) -> int:
    from agentstream.audit import run_query  # pyarrow, pyiceberg and DuckDB load only here
    from agentstream.audit.named import NAMED, render

    if args.list:
        for name, named in sorted(NAMED.items()):
            params = " ".join(f"--param {k}={'<required>' if v is None else v}" for k, v in named.params.items())
            print(f"{name}  {params}\n    {named.doc}")
        return 0
    if (args.query is None) == (args.named is None):
        print("agentstream audit sql: give a query or --named NAME (not both)", file=sys.stderr)
        return 2
    sql = render(args.named, _params(args.param)) if args.named else str(args.query)
    result = await run_query(_warehouse(), sql, tenant_id=args.tenant, max_rows=args.max_rows, timeout_s=args.timeout,
                             catalog=_catalog())  # fmt: skip
    if args.json:
        body = {"columns": result.columns, "rows": result.rows, "truncated": result.truncated}
        print(orjson.dumps(body).decode())
    elif args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(result.columns)
        writer.writerows([[orjson.dumps(v).decode() if isinstance(v, (list, dict)) else v for v in row]
                          for row in result.rows])  # fmt: skip
    else:
        _print_table(result.columns, result.rows)
    if result.truncated:
        print(f"(truncated at {args.max_rows} rows: --max-rows raises it)", file=sys.stderr)
    return 0


async def _tables(args: argparse.Namespace) -> int:
    from agentstream.audit import describe

    listing = await describe(_warehouse(), tenant_id=args.tenant, catalog=_catalog())
    if args.json:
        print(orjson.dumps(listing).decode())
    else:
        _print_table(["name", "kind", "rows"], [[t["name"], t["kind"], t["rows"]] for t in listing])
    return 0


async def _retention(args: argparse.Namespace) -> int:
    from agentstream.audit.retention import apply_retention, read_retention, set_retention
    from agentstream.blobs import BlobError
    from agentstream.blobs.factory import open_blob_store

    settings = Settings.from_env()
    default_days = load(WarehouseSettings).retention_days
    if args.retention_command == "set":
        event = await set_retention(settings, args.tenant, days=args.days, set_by=f"cli:{getpass.getuser()}")
        print(f"retention of {event.tenant_id}: {event.days or 'forever'} days (applied by `audit retention apply`)")
        return 0
    policies = await read_retention(settings)
    if args.retention_command == "show":
        print(f"default (AGENTSTREAM_WAREHOUSE_RETENTION_DAYS): {default_days or 'forever'}")
        for tenant, days in sorted(policies.items()):
            print(f"{tenant}: {days or 'forever'}")
        return 0
    now_ms = args.now_ms if args.now_ms is not None else int(time.time() * 1000)
    try:
        store = open_blob_store(settings)
        try:
            report = await apply_retention(_warehouse(), policies, default_days, now_ms, _catalog(), blobs=store)
        finally:
            await store.close()
    except BlobError as exc:
        print(f"agentstream audit: the blob store failed, no warehouse row was deleted: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(orjson.dumps(report.to_dict()).decode())
        return 0
    for r in report.tables:
        rows = ", ".join(f"{t}: {n}" for t, n in sorted(r.rows_deleted.items())) or "none"
        print(f"{r.table}: {r.skipped or f'rows deleted {rows}; {r.files_removed} files removed'}")
    if report.blobs is not None:
        print(report.blobs.summary())
    return 0


async def audit_command(args: argparse.Namespace) -> int:
    from agentstream.audit import AuditQueryError, WarehouseUnavailable

    try:
        if args.audit_command == "sql":
            return await _sql(args)
        if args.audit_command == "tables":
            return await _tables(args)
        return await _retention(args)
    except (AuditQueryError, ValueError) as exc:
        print(f"agentstream audit: {exc}", file=sys.stderr)
        return 2
    except WarehouseUnavailable as exc:
        print(f"agentstream audit: {exc}", file=sys.stderr)
        return 1
