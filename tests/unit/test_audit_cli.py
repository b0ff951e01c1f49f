"""`agentstream audit sql | tables` on a real local Iceberg warehouse: the output formats, the named
queries, and the exit codes (1: no warehouse yet, 2: a query that cannot run)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path

import pytest

from agentstream.cli.audit import audit_command
from agentstream.cli.main import parser
from tests.unit import audit_fixture as fx

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture
def warehouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "warehouse"
    table = fx.create_events(root)
    fx.append(table, fx.run_events("acme", "a1", NOW - dt.timedelta(hours=1))
              + fx.run_events("beta", "b1", NOW - dt.timedelta(hours=1)))  # fmt: skip
    monkeypatch.setenv("AGENTSTREAM_WAREHOUSE_DIR", str(root))
    monkeypatch.setenv("AGENTSTREAM_HOME", str(tmp_path / "home"))
    return root


async def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await audit_command(parser().parse_args(["audit", *argv]))
    out, err = capsys.readouterr()
    return code, out, err


async def test_sql_prints_a_table_json_or_csv(warehouse: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = await _run(capsys, "sql", "SELECT run_id, status FROM runs ORDER BY run_id")
    assert code == 0 and out.split() == ["run_id", "status", "a1", "completed", "b1", "completed"]
    code, out, _ = await _run(capsys, "sql", "SELECT run_id, started_at FROM runs", "--tenant", "beta", "--json")
    body = json.loads(out)
    assert body["columns"] == ["run_id", "started_at"] and body["rows"][0][0] == "b1" and not body["truncated"]
    code, out, _ = await _run(capsys, "sql", "--named", "cost-per-tenant-per-day", "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {(r["tenant_id"], float(r["cost_usd"])) for r in rows} == {("acme", 0.75), ("beta", 0.75)}
    code, out, err = await _run(capsys, "sql", "SELECT event_id FROM events", "--max-rows", "3")
    assert code == 0 and len(out.splitlines()) == 4 and "truncated at 3 rows" in err


async def test_named_queries_are_listed_and_take_parameters(
    warehouse: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await _run(capsys, "sql", "--list")
    assert code == 0 and "irreversible-approvals" in out and "--param run_id=<required>" in out
    code, out, _ = await _run(capsys, "sql", "--named", "run-history", "--param", "run_id=a1", "--json")
    assert code == 0 and len(json.loads(out)["rows"]) == 12
    code, _, err = await _run(capsys, "sql", "--named", "run-history")
    assert code == 2 and "needs --param run_id" in err


async def test_tables_lists_tables_and_views(warehouse: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = await _run(capsys, "tables", "--json")
    listing = {t["name"]: t for t in json.loads(out)}
    assert (
        code == 0 and listing["events"]["rows"] == 24 and listing["runs"] == {"name": "runs", "kind": "view", "rows": 2}
    )


async def test_exit_codes_say_what_went_wrong(
    warehouse: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    code, _, err = await _run(capsys, "sql", f"SELECT * FROM read_parquet('{warehouse}/**/*.parquet')")
    assert code == 2 and "disabled" in err and str(warehouse) not in err
    code, _, err = await _run(capsys, "sql", "DELETE FROM events")
    assert code == 2 and "one SELECT" in err
    code, _, err = await _run(capsys, "sql", "SELECT 1", "--named", "flagged-runs")
    assert code == 2
    monkeypatch.setenv("AGENTSTREAM_WAREHOUSE_DIR", str(tmp_path / "nothing-yet"))
    code, _, err = await _run(capsys, "sql", "SELECT 1")
    assert code == 1 and "no catalog yet" in err
