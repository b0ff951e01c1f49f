"""`agentstream blobs delete-run --tenant T RUN_ID [--force] [--json]`: one run's blobs, deleted
by hand (retention deletes those of the runs that ended before their tenant's cutoff itself:
agentstream/audit/run_blobs.py).

The run is looked up in its journal first. One that has not ended (running, or halted and so still
resumable) needs its blobs: its model calls read its offloaded results back from them. It is
refused unless `--force`, as is a run the journal does not hold (never journaled, or its records
are gone). Refused even with `--force`: a run of another tenant, a named scope (`memory`).
Exit codes: 0 deleted, 1 refused or the store failed, 2 a tenant or run id no blob can have."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from agentstream.blobs import BlobError
from agentstream.blobs.factory import open_blob_store
from agentstream.blobs.scopes import run_scope_problem
from agentstream.blobs.store import BlobEntry, BlobStore
from agentstream.client.journal import JournalEntry, read_run_once
from agentstream.config import Settings
from agentstream.events import TERMINAL_TYPES, RunHalted


class DeleteRefused(Exception):
    """The run's blobs are not deleted; the message says why and what would allow it."""


def add_delete_run_parser(actions: Any) -> None:
    delete = actions.add_parser(
        "delete-run", help="delete one run's blobs (refused while the run has not ended, unless --force)"
    )
    delete.add_argument("run_id", metavar="RUN_ID")
    delete.add_argument("--tenant", required=True, help="the run's tenant")
    delete.add_argument("--force", action="store_true", help="also when the run has not ended or is not in the journal")
    delete.add_argument("--json", action="store_true")


def refusal(tenant_id: str, run_id: str, entries: list[JournalEntry], *, force: bool) -> str | None:
    """Why this run's blobs must not be deleted now, given its journal; None when they may."""
    problem = run_scope_problem(tenant_id, run_id)
    if problem is not None:
        return problem
    owners = sorted({e.event.tenant_id for e in entries} - {tenant_id})
    if owners:
        return f"run {run_id} is tenant {', '.join(owners)}'s, not {tenant_id}'s"
    if force:
        return None
    if not entries:
        return (
            f"run {run_id} is not in the journal (never journaled, or its records are gone); "
            f"--force deletes tenant {tenant_id}'s blobs of that scope anyway"
        )
    if any(e.event.type_name in TERMINAL_TYPES for e in entries):
        return None
    halted = any(isinstance(e.event, RunHalted) for e in entries)
    state = (
        "is halted and can still be resumed" if halted else f"has not ended (last event {entries[-1].event.type_name})"
    )
    return f"run {run_id} {state}: its model calls read its blobs back; --force deletes them anyway"


async def delete_run(
    store: BlobStore, tenant_id: str, run_id: str, entries: list[JournalEntry], *, force: bool
) -> tuple[list[BlobEntry], int]:
    """The blobs listed just before the prefix delete, and how many objects it deleted."""
    problem = refusal(tenant_id, run_id, entries, force=force)
    if problem is not None:
        raise DeleteRefused(problem)
    listed = await store.list_blobs(tenant_id, run_id)
    return listed, await store.delete_prefix(tenant_id, run_id)


async def delete_with_journal(settings: Settings, args: argparse.Namespace, entries: list[JournalEntry]) -> int:
    """The command once the run's journal is read: deletes, prints, and gives the exit code."""
    try:
        store = open_blob_store(settings)
        try:
            listed, deleted = await delete_run(store, args.tenant, args.run_id, entries, force=args.force)
        finally:
            await store.close()
    except DeleteRefused as exc:
        print(f"agentstream blobs: refused: {exc}", file=sys.stderr)
        return 1
    except BlobError as exc:
        print(f"agentstream blobs: {exc}", file=sys.stderr)
        return 1
    if args.json:
        body = {"tenant_id": args.tenant, "run_id": args.run_id, "deleted": deleted,
                "blobs": [{"sha256": b.sha256, "stored_bytes": b.stored_bytes} for b in listed]}  # fmt: skip
        print(orjson.dumps(body).decode())
        return 0
    for blob in listed:
        print(f"deleted {blob.tenant_id}/{blob.scope}/{blob.sha256} ({blob.stored_bytes} bytes stored)")
    print(f"{deleted} blobs of run {args.run_id} (tenant {args.tenant}) deleted")
    return 0


async def delete_run_command(args: argparse.Namespace) -> int:
    problem = run_scope_problem(args.tenant, args.run_id)
    if problem is not None:  # before the journal is read: no run can have blobs there
        print(f"agentstream blobs: {problem}", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    return await delete_with_journal(settings, args, await read_run_once(settings, args.run_id))
