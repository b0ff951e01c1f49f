"""The console's run catalog: a summary of every run on record and every settled call, in a small
on-disk SQLite index that the runs list and the cost charts query (agentstream.gateway.console_api).

Why not the projection: it holds live runs and a bounded LRU of settled ones; a list of 100,000
runs (filters, newest first, pages) needs every run's summary, which must not live in memory.
SQLite's private temporary database (an empty file name) lives on disk and is deleted when its
connection closes; its page cache is capped here, so memory stays bounded whatever the history,
and a filtered page is a range scan of an index (bench/console.py measures it).

Fed by the projection (nothing here reads Kafka): a run whose view changed is written at most
once per `flush_s`, and before every query, so a list reads the gateway's own writes; each
settled call (BudgetSettled) is one row of `calls`, keyed by run and call id, so a call read
twice (a run read back from the journal) counts once. Runs that settled before this gateway
started (its projection starts at a checkpoint) come from the run index (`runs.index`, read
whole at start): each entry written as a run settles or leaves memory carries `summary` (its
Run resource and settled calls), so a restart lists the whole history without reading the journal.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:  # the views import nothing from here; only their type is named
    from agentstream.events import BudgetSettled, RunIndexed
    from agentstream.gateway.views import RunView

# Bounds the page cache (KiB, SQLite's negative cache_size); the rest of the index stays on disk.
CACHE_KIB = 8192
_SCHEMA = """
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, created_ms INTEGER NOT NULL, status TEXT NOT NULL,
    cost_usd REAL NOT NULL, flagged INTEGER NOT NULL, tools TEXT NOT NULL, last_offset INTEGER NOT NULL,
    resource BLOB NOT NULL
);
CREATE INDEX runs_by_time ON runs (tenant_id, created_ms, run_id);
CREATE INDEX runs_by_status ON runs (tenant_id, status, created_ms, run_id);
CREATE TABLE calls (
    run_id TEXT NOT NULL, call_id TEXT NOT NULL, tenant_id TEXT NOT NULL, ts_ms INTEGER NOT NULL,
    kind TEXT NOT NULL, tool TEXT NOT NULL, model TEXT NOT NULL, usd REAL NOT NULL,
    PRIMARY KEY (run_id, call_id)
) WITHOUT ROWID;
CREATE INDEX calls_by_time ON calls (tenant_id, ts_ms);
"""
# What `by` groups calls on; `tool` and `model` count only calls of that kind.
_SERIES_KEY = {"tool": "tool", "model": "model", "run": "run_id", "tenant": "tenant_id"}
# A run's row is replaced only by a view at least as far along in the journal: an index entry read
# late (another gateway's, or this one's own read back) never hides what the projection applied since.
_UPSERT_RUN = """INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET
    tenant_id = excluded.tenant_id, created_ms = excluded.created_ms, status = excluded.status,
    cost_usd = excluded.cost_usd, flagged = excluded.flagged, tools = excluded.tools,
    last_offset = excluded.last_offset, resource = excluded.resource WHERE excluded.last_offset >= runs.last_offset"""
_Row = tuple[str, str, int, str, float, int, str, int, bytes]
_Call = tuple[str, str, str, int, str, str, str, float]
_SERIES_KIND = {"tool": "AND kind != 'model'", "model": "AND kind = 'model'", "run": "", "tenant": ""}


@dataclass(frozen=True)
class RunFilter:
    """A runs list's selection: every field narrows it, None (or empty) leaves it open."""

    status: str | None = None
    tool: str | None = None
    flagged: bool | None = None
    min_cost_usd: float | None = None
    max_cost_usd: float | None = None
    id_prefix: str | None = None


@dataclass(frozen=True)
class SeriesRow:
    bucket_ms: int
    key: str
    usd: float
    calls: int


class RunCatalog:
    def __init__(self, flush_s: float = 1.0) -> None:
        # "": a private on-disk database, removed when the connection closes.
        self._db = sqlite3.connect("", isolation_level=None, check_same_thread=False)
        for pragma in (f"cache_size=-{CACHE_KIB}", "journal_mode=OFF", "synchronous=OFF", "temp_store=FILE"):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.executescript(_SCHEMA)
        self.flush_s = flush_s
        self._dirty: dict[str, RunView] = {}
        self._calls: list[_Call] = []
        self._ingested: list[_Row] = []
        self._next_flush = time.monotonic() + flush_s

    # -- fed by the projection (per event: a dict write, nothing more) -------------------------------

    def touch(self, view: RunView) -> None:
        self._dirty[view.run_id] = view

    def settled(self, event: BudgetSettled, timestamp_ms: int) -> None:
        if event.kind == "subagent":
            return  # a child's spend on its parent's ledger: the child's own calls count it
        self._calls.append((event.run_id, event.call_id, event.tenant_id, timestamp_ms, event.kind, event.tool,
                            event.model, event.cost_usd))  # fmt: skip

    def ingest(self, entry: RunIndexed) -> None:
        """A run index entry's summary (written by `summary`): a run recorded before this start."""
        try:
            found = orjson.loads(entry.summary)
            run, calls = found["run"], found["calls"]
            tools = "\n" + "\n".join(run["tools"]) + "\n"
            self._ingested.append((entry.run_id, entry.tenant_id, int(run["created_at_ms"]), str(run["status"]),
                                   float(run["cost_usd"]), int(bool(run["flags"])), tools, entry.last_offset,
                                   orjson.dumps(run)))  # fmt: skip
            self._calls += [(entry.run_id, str(c), entry.tenant_id, int(t), str(k), str(tool), str(m), float(usd))
                            for c, t, k, tool, m, usd in calls]  # fmt: skip
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return  # not a summary this version wrote: the entry stays a location only

    def summary(self, view: RunView) -> str:
        """The run as its index entry carries it: its Run resource and its settled calls so far."""
        self._write([], self._take_calls())
        calls = self._db.execute(
            "SELECT call_id, ts_ms, kind, tool, model, usd FROM calls WHERE run_id = ?", (view.run_id,)
        ).fetchall()
        return orjson.dumps({"run": orjson.Fragment(_row(view)[-1]), "calls": calls}).decode()

    def flush_due(self) -> None:
        if time.monotonic() >= self._next_flush:
            self.flush()

    def flush(self) -> None:
        """Writes every changed run and settled call (one transaction)."""
        self._next_flush = time.monotonic() + self.flush_s
        if not self._dirty and not self._calls and not self._ingested:
            return
        views, self._dirty = list(self._dirty.values()), {}
        rows, self._ingested = self._ingested, []
        self._write(rows + [_row(view) for view in views], self._take_calls())

    def _take_calls(self) -> list[_Call]:
        calls, self._calls = self._calls, []
        return calls

    def _write(self, rows: list[_Row], calls: list[_Call]) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(_UPSERT_RUN, rows)
            self._db.executemany("INSERT OR IGNORE INTO calls VALUES (?, ?, ?, ?, ?, ?, ?, ?)", calls)

    # -- queries ----------------------------------------------------------------------------------

    def runs(
        self, tenant_id: str, where: RunFilter, after: tuple[int, str] | None, limit: int, *, newest: bool
    ) -> list[tuple[int, str, bytes]]:
        """(created_ms, run id, the Run resource as JSON) of one page, in list order."""
        self.flush()
        sql = ["SELECT created_ms, run_id, resource FROM runs WHERE tenant_id = ?"]
        args: list[object] = [tenant_id]
        if where.status is not None:
            sql.append("AND status = ?")
            args.append(where.status)
        if where.tool:
            sql.append("AND instr(tools, ?) > 0")
            args.append(f"\n{where.tool}\n")
        if where.flagged is not None:
            sql.append("AND flagged = ?")
            args.append(int(where.flagged))
        if where.min_cost_usd is not None:
            sql.append("AND cost_usd >= ?")
            args.append(where.min_cost_usd)
        if where.max_cost_usd is not None:
            sql.append("AND cost_usd <= ?")
            args.append(where.max_cost_usd)
        if where.id_prefix:
            # A range on the primary key: the prefix's run ids, whatever follows it.
            sql.append("AND run_id >= ? AND run_id < ?")
            args += [where.id_prefix, where.id_prefix + "\U0010ffff"]
        if after is not None:
            sql.append("AND (created_ms, run_id) " + ("< (?, ?)" if newest else "> (?, ?)"))
            args += list(after)
        order = "DESC" if newest else "ASC"
        sql.append(f"ORDER BY created_ms {order}, run_id {order} LIMIT ?")
        args.append(limit)
        return [(int(c), str(r), bytes(res)) for c, r, res in self._db.execute(" ".join(sql), args)]

    def series(
        self, tenant_id: str, by: str, bucket_ms: int, since_ms: int, until_ms: int, run_id: str | None
    ) -> tuple[list[SeriesRow], float]:
        """Spend per (bucket, key) in [since, until), and the window's total over every call."""
        self.flush()
        scope, args = "tenant_id = ? AND ts_ms >= ? AND ts_ms < ?", [tenant_id, since_ms, until_ms]
        if run_id is not None:
            scope += " AND run_id = ?"
            args.append(run_id)
        sql = (f"SELECT (ts_ms / ?) * ? AS bucket, {_SERIES_KEY[by]}, sum(usd), count(*) FROM calls "
               f"WHERE {scope} {_SERIES_KIND[by]} GROUP BY bucket, {_SERIES_KEY[by]}")  # fmt: skip
        rows = [
            SeriesRow(int(b), str(k), float(u), int(n)) for b, k, u, n in self._db.execute(sql, [bucket_ms] * 2 + args)
        ]
        (total,) = self._db.execute(f"SELECT coalesce(sum(usd), 0) FROM calls WHERE {scope}", args).fetchone()
        return rows, float(total)

    @property
    def runs_on_record(self) -> int:
        self.flush()
        return int(self._db.execute("SELECT count(*) FROM runs").fetchone()[0])

    def close(self) -> None:
        self._db.close()


def _row(view: RunView) -> _Row:
    resource = view.resource()
    tools = "\n" + "\n".join(view.tools) + "\n"  # instr() on "\n<name>\n" matches one whole name
    return (view.run_id, view.tenant_id, view.created_ms, resource.status.value, resource.cost_usd,
            int(bool(view.flags)), tools, view.last_offset, resource.model_dump_json().encode())  # fmt: skip
