"""The blob side of retention: a run's blobs (the blob scope named by its run id) go with its
warehouse record.

Which runs: those whose terminal event (RunCompleted, RunFailed, RunCancelled) is among the rows
retention is about to delete, so they ended before their tenant's cutoff. They are read from the
`events` table, and their blobs deleted, before any row is: a crash in between leaves rows past
their retention whose blobs are gone (the next apply deletes the rows, and finds no blob left),
never blobs that no record names any more. A run without a terminal event (running, or halted:
it may still be resumed) and a run that ended after the cutoff keep every blob. A named scope
(`memory`) is never a run's, whatever a run id says."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pyiceberg.expressions import And, BooleanExpression

from agentstream.audit.warehouse import TENANT_COLUMN, Warehouse, one_of
from agentstream.blobs.scopes import run_scope_problem
from agentstream.blobs.store import BlobStore
from agentstream.events import TERMINAL_TYPES

EVENTS_TABLE = "events"


@dataclass(frozen=True, order=True, slots=True)
class EndedRun:
    tenant_id: str
    run_id: str


@dataclass
class BlobReport:
    runs: dict[str, int] = field(default_factory=dict)  # tenant -> ended runs whose blob scope was deleted
    blobs_deleted: dict[str, int] = field(default_factory=dict)  # tenant -> objects deleted
    skipped: dict[str, str] = field(default_factory=dict)  # "<tenant>/<run>" -> why its scope was left alone

    def to_dict(self) -> dict[str, Any]:
        return {"runs": self.runs, "blobs_deleted": self.blobs_deleted, "skipped": self.skipped}

    def summary(self) -> str:
        per_tenant = "; ".join(
            f"{t}: runs {n}, blobs {self.blobs_deleted.get(t, 0)}" for t, n in sorted(self.runs.items())
        )
        line = f"blobs of the runs that ended before their cutoff: {per_tenant or 'none'}"
        skipped = "; ".join(f"{run}: {why}" for run, why in sorted(self.skipped.items()))
        return f"{line}; skipped {skipped}" if skipped else line


def ended_runs(wh: Warehouse, expired: BooleanExpression) -> list[EndedRun]:
    """The runs whose terminal event is among the `expired` rows of the events table (every
    tenant's cutoff is in that filter); the table exists. Blocking: call it in a thread."""
    columns = set(wh.table(EVENTS_TABLE, reload=True).schema().column_names)
    if not {TENANT_COLUMN, "run_id", "event_type"} <= columns:
        return []  # no run has landed yet
    rows = wh.scan(EVENTS_TABLE, row_filter=And(expired, one_of("event_type", set(TERMINAL_TYPES))))
    pairs = zip(rows[TENANT_COLUMN].to_pylist(), rows["run_id"].to_pylist(), strict=True)
    return sorted({EndedRun(str(tenant), str(run)) for tenant, run in pairs if tenant and run})


async def delete_run_blobs(store: BlobStore, runs: Iterable[EndedRun]) -> BlobReport:
    """Deletes each run's blob scope (one prefix delete each). A store error stops it: the caller
    must not delete the rows of runs whose blobs may still be there."""
    report = BlobReport()
    for run in runs:
        problem = run_scope_problem(run.tenant_id, run.run_id)
        if problem is not None:
            report.skipped[f"{run.tenant_id}/{run.run_id}"] = problem
            continue
        deleted = await store.delete_prefix(run.tenant_id, run.run_id)
        report.runs[run.tenant_id] = report.runs.get(run.tenant_id, 0) + 1
        report.blobs_deleted[run.tenant_id] = report.blobs_deleted.get(run.tenant_id, 0) + deleted
    return report
