"""Audit queries on a real local Iceberg warehouse (pyiceberg's SQL catalog on SQLite, Parquet data
files, the sink's partitioning) through real DuckDB: the views, the named queries, and a tenant's
query trying every way out of its own rows (other tenants' rows, files, ATTACH, COPY, INSTALL, SET,
huge results, runaway queries, paths in error messages)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import fastavro
import pytest
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
from pyiceberg.schema import Schema
from pyiceberg.typedef import Record
from pyiceberg.types import NestedField, StringType

from agentstream.audit import AuditQueryError, TableFormatError, WarehouseUnavailable, run_history, run_query
from agentstream.audit.named import NAMED, render
from agentstream.audit.query import Sandbox, describe
from agentstream.audit.views import EVENT_COLUMNS, VIEWS
from agentstream.audit.warehouse import Warehouse
from tests.unit import audit_fixture as fx

NOW = dt.datetime.now(dt.UTC)
ACME_RUNS, BETA_RUNS = 3, 2


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("audit") / "warehouse"
    table = fx.create_events(root)
    rows = [e for i in range(ACME_RUNS) for e in fx.run_events("acme", f"a{i}", NOW - dt.timedelta(hours=i + 1))]
    rows += [e for i in range(BETA_RUNS) for e in fx.run_events("beta", f"b{i}", NOW - dt.timedelta(hours=1))]
    rows += fx.run_events("acme", "a-old", NOW - dt.timedelta(days=9))  # outside a week
    rows += fx.run_events("acme", "a-safe", NOW - dt.timedelta(hours=2), irreversible=False)
    rows += fx.run_events("acme", "a-auto", NOW - dt.timedelta(hours=3), auto=True)
    rows += fx.flagged_run("acme", "a-loop", NOW - dt.timedelta(minutes=30))
    fx.append(table, rows)
    return root


async def _rows(warehouse: Path, sql: str, tenant: str | None) -> list[list[object]]:
    return (await run_query(warehouse, sql, tenant_id=tenant)).rows


async def test_views_summarise_runs_calls_approvals_and_costs(warehouse: Path) -> None:
    runs = await run_query(warehouse, "SELECT * FROM runs ORDER BY run_id", tenant_id=None)
    by_id = {row[0]: dict(zip(runs.columns, row, strict=True)) for row in runs.rows}
    assert len(by_id) == ACME_RUNS + BETA_RUNS + 4
    a0 = by_id["a0"]
    assert (a0["tenant_id"], a0["status"], a0["terminal_event"], a0["steps"], a0["cost_usd"]) == (
        "acme", "completed", "RunCompleted", 2, 0.75
    )  # fmt: skip
    assert a0["started_at"] < a0["ended_at"] and str(a0["started_at"]).endswith("+00:00")  # ISO, UTC
    assert by_id["a-loop"]["status"] == "halted"
    model = await run_query(warehouse, "SELECT * FROM model_calls WHERE call_id = 'a0-m1'", tenant_id=None)
    call = dict(zip(model.columns, model.rows[0], strict=True))
    assert (call["model"], call["input_tokens"], call["output_tokens"], call["latency_ms"], call["status"]) == (
        "scripted", 100, 20, 12.5, "completed"
    )  # fmt: skip
    tools = await run_query(warehouse, "SELECT * FROM tool_calls WHERE run_id = 'a0'", tenant_id=None)
    tool = dict(zip(tools.columns, tools.rows[0], strict=True))
    assert (tool["tool"], tool["tier"], tool["irreversible"], tool["approver"], tool["is_error"]) == (
        "transfer_funds", "irreversible", True, "alice@acme", False
    )  # fmt: skip
    assert await _rows(warehouse, "SELECT decision, approver FROM approvals WHERE run_id = 'b0'", None) == [
        ["approved", "alice@beta"]
    ]
    assert await _rows(warehouse, "SELECT sum(cost_usd) FROM costs WHERE tenant_id = 'beta'", None) == [[1.5]]
    assert await _rows(warehouse, "SELECT run_id, kind, action FROM flags ORDER BY event_id", None) == [
        ["a-loop", "repeated_call", "halt"],
        ["a-loop", "repetition", "warning"],  # a failed step check (EvalVerdict)
    ]


async def test_named_queries_answer_the_documented_questions(warehouse: Path) -> None:
    week = await run_query(warehouse, render("irreversible-approvals", {}), tenant_id=None)
    got = {(r[week.columns.index("run_id")], r[week.columns.index("approver")]) for r in week.rows}
    # a-old is 9 days old, a-safe's call is read-only; a longer window finds a-old.
    assert got == {(f"a{i}", "alice@acme") for i in range(ACME_RUNS)} | {(f"b{i}", "alice@beta") for i in range(2)} | {
        ("a-auto", "tenant policy (auto_approve)")
    }
    longer = await run_query(warehouse, render("irreversible-approvals", {"days": "30"}), tenant_id="acme")
    assert len(longer.rows) == ACME_RUNS + 2
    tiers = await _rows(warehouse, "SELECT run_id, tier, policy_decision FROM tool_calls WHERE run_id LIKE 'a-%'", None)
    assert sorted(tiers) == [["a-auto", "irreversible", "allow"], ["a-old", "irreversible", "needs_approval"],
                             ["a-safe", "read_only", "allow"]]  # fmt: skip
    costs = await run_query(warehouse, render("cost-per-tenant-per-day", {}), tenant_id=None)
    per = {(r[0], r[1]): r[2] for r in costs.rows}
    beta = sum(usd for (_, tenant), usd in per.items() if tenant == "beta")
    assert beta == pytest.approx(0.75 * BETA_RUNS) and sum(per.values()) == pytest.approx(0.75 * (ACME_RUNS + 5))
    history = await run_query(warehouse, render("run-history", {"run_id": "a1"}), tenant_id="acme")
    types = [r[history.columns.index("event_type")] for r in history.rows]
    assert types[0] == "RunRequested" and types[-1] == "RunCompleted" and len(types) == 12
    flagged = await run_query(warehouse, render("flagged-runs", {}), tenant_id=None)
    assert [r[0] for r in flagged.rows] == ["a-loop"] and flagged.rows[0][2] == "halted"
    # A parameter is a value, never SQL.
    sneaky = await run_query(warehouse, render("run-history", {"run_id": "x' OR '1'='1"}), tenant_id=None)
    assert sneaky.rows == []
    for bad in ({"days": "1; DROP"}, {"nope": "1"}):
        with pytest.raises(AuditQueryError):
            render("irreversible-approvals", bad)
    with pytest.raises(AuditQueryError, match="needs --param run_id"):
        render("run-history", {})
    assert set(NAMED) == {"irreversible-approvals", "cost-per-tenant-per-day", "run-history", "flagged-runs"}


ESCAPES = [
    "SELECT * FROM events WHERE tenant_id = 'beta'",
    "SELECT * FROM (SELECT * FROM events UNION ALL SELECT * FROM events) WHERE tenant_id <> 'acme'",
    "SELECT (SELECT count(*) FROM events WHERE tenant_id = 'beta') AS n WHERE n > 0",
    "SELECT * FROM temp.main.events WHERE tenant_id = 'beta'",
    "WITH t AS (SELECT * FROM events) SELECT * FROM t WHERE tenant_id != 'acme'",
    *(f"SELECT * FROM {view} WHERE tenant_id IS DISTINCT FROM 'acme'" for view in VIEWS),
]


@pytest.mark.parametrize("sql", ESCAPES)
async def test_a_tenant_sees_only_its_own_rows_whatever_the_sql(warehouse: Path, sql: str) -> None:
    assert (await run_query(warehouse, sql, tenant_id="acme")).rows == []
    assert (await run_query(warehouse, sql, tenant_id="nobody")).rows == []


async def test_each_tenant_and_the_operator_see_their_rows(warehouse: Path) -> None:
    count = "SELECT tenant_id, count(*) FROM runs GROUP BY tenant_id ORDER BY 1"
    assert await _rows(warehouse, count, "acme") == [["acme", ACME_RUNS + 4]]
    assert await _rows(warehouse, count, "beta") == [["beta", BETA_RUNS]]
    assert await _rows(warehouse, count, None) == [["acme", ACME_RUNS + 4], ["beta", BETA_RUNS]]
    assert await run_history(warehouse, "b0", tenant_id="acme") == []
    history = await run_history(warehouse, "b0", tenant_id="beta")
    assert [e["event_id"] for e in history] == [f"b0-{i}" for i in range(12)]
    assert isinstance(history[0]["journal_time"], dt.datetime) and "final_answer" not in history[0]
    assert await run_history(warehouse, "missing", tenant_id=None) == []


def _file_attacks(warehouse: Path) -> list[str]:
    data = next((warehouse / "audit" / "events" / "data").glob("*.parquet"))
    return [
        f"SELECT * FROM read_parquet('{data}')",
        f"SELECT * FROM read_parquet('{warehouse}/**/*.parquet')",
        f"SELECT * FROM read_csv('{warehouse / 'catalog.db'}')",
        f"SELECT * FROM read_blob('{warehouse / 'catalog.db'}')",
        f"SELECT * FROM read_text('{warehouse / 'catalog.db'}')",
        f"SELECT * FROM glob('{warehouse}/*')",
        f"SELECT * FROM '{data}'",
        f"SELECT * FROM sqlite_scan('{warehouse / 'catalog.db'}', 'iceberg_tables')",
        "SELECT * FROM read_csv('/etc/passwd')",
    ]


async def test_files_cannot_be_read_and_errors_name_no_path(warehouse: Path) -> None:
    for sql in _file_attacks(warehouse):
        with pytest.raises(AuditQueryError) as err:
            await run_query(warehouse, sql, tenant_id="acme")
        assert str(warehouse) not in str(err.value) and "/etc" not in str(err.value), str(err.value)


@pytest.mark.parametrize(
    "sql",
    [
        "ATTACH 'x.db' AS x", "COPY events TO 'out.csv'", "INSTALL iceberg", "LOAD iceberg",
        "SET enable_external_access = true", "PRAGMA enable_profiling", "CREATE TABLE t AS SELECT 1",
        "SELECT 1; SELECT 2", "EXPORT DATABASE 'dump'", "CALL pragma_version()", "DROP VIEW runs",
    ],
)  # fmt: skip
async def test_only_one_select_statement_runs(warehouse: Path, sql: str) -> None:
    with pytest.raises(AuditQueryError):
        await run_query(warehouse, sql, tenant_id="acme")


@pytest.mark.parametrize(
    "sql",
    [
        "ATTACH '{w}/catalog.db' AS c", "COPY (SELECT * FROM events) TO '{w}/out.csv'", "INSTALL sqlite",
        "LOAD sqlite", "SET enable_external_access = true", "SET memory_limit = '64GB'", "RESET lock_configuration",
        "SET threads = 64", "EXPORT DATABASE '{w}/dump'",
    ],
)  # fmt: skip
def test_the_sandbox_itself_refuses_files_extensions_and_settings(warehouse: Path, sql: str) -> None:
    """Below the one-SELECT rule: the database would refuse these statements anyway."""
    import duckdb

    sandbox = Sandbox(Warehouse(warehouse), "acme")
    sandbox.load({"events"})
    with pytest.raises((duckdb.PermissionException, duckdb.InvalidInputException)):
        sandbox.con.execute(sql.format(w=warehouse))
    assert not (warehouse / "out.csv").exists() and not (warehouse / "dump").exists()


async def test_huge_results_are_truncated(warehouse: Path) -> None:
    result = await run_query(
        warehouse, "SELECT a.event_id FROM events a, events b, events c", tenant_id="acme", max_rows=1000
    )
    assert len(result.rows) == 1000 and result.truncated
    small = await run_query(warehouse, "SELECT event_id FROM events", tenant_id="beta", max_rows=1000)
    assert len(small.rows) == 12 * BETA_RUNS and not small.truncated


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT count(*) FROM events a, events b, events c, events d, events e, events f, events g",
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
    ],
)
async def test_a_runaway_query_is_interrupted_at_its_timeout(warehouse: Path, sql: str) -> None:
    began = time.monotonic()
    with pytest.raises(AuditQueryError, match=r"past its 1s limit|[Oo]ut of [Mm]emory"):
        await run_query(warehouse, sql, tenant_id="acme", timeout_s=1.0)
    assert time.monotonic() - began < 10
    assert (await run_query(warehouse, "SELECT 1 AS one", tenant_id="acme")).rows == [[1]]  # nothing left stuck


async def test_unknown_tables_and_bad_sql_are_query_errors(warehouse: Path) -> None:
    for sql in ("SELECT * FROM nope", "SELEC 1", "SELECT * FROM tools"):
        with pytest.raises(AuditQueryError) as err:
            await run_query(warehouse, sql, tenant_id="acme")
        assert str(warehouse) not in str(err.value)


async def test_tables_lists_what_a_query_can_read(warehouse: Path) -> None:
    listing = {t["name"]: (t["kind"], t["rows"]) for t in await describe(warehouse, tenant_id="beta")}
    assert listing["events"] == ("table", 12 * BETA_RUNS) and listing["runs"] == ("view", BETA_RUNS)
    assert set(listing) == {"events", *VIEWS}


async def test_a_fresh_sparse_table_answers_every_view(tmp_path: Path) -> None:
    """Before most event types have landed, most columns do not exist: every view still works."""
    first = {n: EVENT_COLUMNS[n] for n in ("event_id", "event_type", "run_id", "tenant_id", "journal_time", "task")}
    table = fx.create_events(tmp_path, first)
    fx.append(table, [{"event_id": "e1", "event_type": "RunRequested", "run_id": "r1", "tenant_id": "acme",
                       "journal_time": NOW, "task": "hello"}])  # fmt: skip
    for view in VIEWS:
        await run_query(tmp_path, f"SELECT * FROM {view}", tenant_id="acme")
    assert await _rows(tmp_path, "SELECT run_id, status, cost_usd FROM runs", "acme") == [["r1", None, 0.0]]


async def test_no_warehouse_yet_is_its_own_error(tmp_path: Path) -> None:
    with pytest.raises(WarehouseUnavailable):
        await run_query(tmp_path / "none", "SELECT 1", tenant_id=None)
    assert not (tmp_path / "none").exists()  # a reader creates nothing
    fx.catalog(tmp_path / "empty")  # a catalog without the audit tables
    with pytest.raises(AuditQueryError):
        await run_query(tmp_path / "empty", "SELECT * FROM events", tenant_id=None)
    assert await run_history(tmp_path / "none", "r1", tenant_id=None) == []


async def test_a_table_of_avro_data_files_says_so(tmp_path: Path) -> None:
    """What AGENTSTREAM_WAREHOUSE_FORMAT=avro writes: pyiceberg reads no Avro data file."""
    cat = fx.catalog(tmp_path)
    cat.create_namespace("audit")
    schema = Schema(NestedField(1, "event_id", StringType(), required=False),
                    NestedField(2, "tenant_id", StringType(), required=False))  # fmt: skip
    table = cat.create_table(("audit", "events"), schema=schema, properties={"write.format.default": "avro"})
    path = tmp_path / "data.avro"
    avro_schema = {"type": "record", "name": "r", "fields": [
        {"name": "event_id", "type": ["null", "string"], "field-id": 1},
        {"name": "tenant_id", "type": ["null", "string"], "field-id": 2}]}  # fmt: skip
    with path.open("wb") as fh:
        fastavro.writer(fh, fastavro.parse_schema(avro_schema), [{"event_id": "e1", "tenant_id": "acme"}])
    data = DataFile.from_args(content=DataFileContent.DATA, file_path=str(path), file_format=FileFormat.AVRO,
                              partition=Record(), record_count=1, file_size_in_bytes=path.stat().st_size)  # fmt: skip
    with table.transaction() as tx, tx.update_snapshot().fast_append() as append:
        append.append_data_file(data)
    with pytest.raises(TableFormatError, match="Avro data files") as err:
        await run_query(tmp_path, "SELECT * FROM events", tenant_id=None)
    assert str(tmp_path) not in str(err.value)


async def test_compactions_and_compaction_calls_are_their_own_rows(tmp_path: Path) -> None:
    root = tmp_path / "warehouse"
    fx.append(fx.create_events(root), fx.compacted_run("acme", "c1", NOW) + fx.compacted_run("beta", "c2", NOW))
    got = await run_query(root, "SELECT * FROM compactions ORDER BY compaction", tenant_id="acme")
    rows = [dict(zip(got.columns, row, strict=True)) for row in got.rows]
    assert [(r["run_id"], r["kind"], r["cleared_results"], r["tokens_saved"], r["summary_call_id"]) for r in rows] == [
        ("c1", "clear", 2, 30_000, None), ("c1", "summarize", 0, 60_000, "c1/s0004/compact02")
    ]  # fmt: skip
    assert rows[1]["summary"] == "fetched: p1" and rows[0]["compacted_at"] < rows[1]["compacted_at"]
    purposes = await _rows(root, "SELECT call_id, purpose FROM model_calls ORDER BY call_id", "acme")
    # A call journaled before the field existed (NULL in the table) was the run's own.
    assert purposes == [["c1/s0001/llm", "step"], ["c1/s0004/compact02", "compaction"], ["c1/s0005/llm", "step"]]
