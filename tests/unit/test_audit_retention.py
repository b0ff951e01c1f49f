"""Per-tenant retention on a real local Iceberg table: a tenant's rows past its retention leave the
table and their files leave the disk (manifests that listed them included), other tenants' rows
stay, the sink's committed offsets survive on the new snapshot; the setting's control event is
ignored by every processor that tails the control topic. The blobs of the runs that ended before
their tenant's cutoff go first, and only theirs."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest
from confluent_kafka import Message
from pyiceberg.exceptions import CommitFailedException

from agentstream.audit.query import run_query
from agentstream.audit.retention import (
    DAY_MS,
    _retry,
    apply_retention,
    apply_to_tables,
    cutoff_ms,
    retention_key,
    retention_of,
)
from agentstream.audit.warehouse import Warehouse
from agentstream.blobs import BlobStoreUnavailable
from agentstream.blobs.local import LocalBlobStore
from agentstream.blobs.s3 import S3BlobStore, S3Target
from agentstream.budgets.controls import ControlReader, CostControls
from agentstream.codec import AvroCodec
from agentstream.config import Settings
from agentstream.credentials.keys import LocalKeyProvider
from agentstream.events import AuditRetentionSet, TenantBudgetSet
from agentstream.registry.catalog import ToolCatalog
from agentstream.registry.reader import CatalogReader
from agentstream.settings import ModelSettings
from tests.unit import audit_fixture as fx

NOW = dt.datetime.now(dt.UTC)
NOW_MS = int(NOW.timestamp() * 1000)
OFFSETS = {"kafka.connect.offsets.runs.journal.group": '{"0": 42}', "kafka.connect.commit-id": "c1"}


def _warehouse(root: Path) -> dict[str, list[str]]:
    """Old and new runs of acme and beta, one append each (the sink's offsets on each snapshot)."""
    table = fx.create_events(root)
    files: dict[str, list[str]] = {}
    for tenant in ("acme", "beta"):
        for age, label in ((10, "old"), (0, "new")):
            run = f"{label}-{tenant}"
            events = fx.run_events(tenant, run, NOW - dt.timedelta(days=age, minutes=5))
            events[0]["task"] = "0123456789abcdef-past-any-column-bound-" + run
            files[run] = fx.append(table, events)
            table = fx.catalog(root).load_table(("audit", "events"))
    return files


def _all_files(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*") if p.is_file()}


def _manifest_entries(root: Path) -> set[str]:
    """Every data file any manifest of any snapshot lists, deleted entries included."""
    table = Warehouse(root).table("events")
    return {
        entry.data_file.file_path
        for snapshot in table.metadata.snapshots
        for manifest in snapshot.manifests(table.io)
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False)
    }


async def test_a_tenants_old_rows_and_their_files_go_and_nothing_else(tmp_path: Path) -> None:
    files = _warehouse(tmp_path)
    [report] = apply_to_tables(tmp_path, {"acme": 5}, 0, NOW_MS)
    assert report.table == "events" and report.rows_deleted == {"acme": 12} and report.files_removed > 0
    runs = await run_query(tmp_path, "SELECT run_id FROM runs ORDER BY run_id", tenant_id=None)
    assert [r[0] for r in runs.rows] == ["new-acme", "new-beta", "old-beta"]
    # The data file is gone, and so is every manifest that listed it (with its column bounds).
    assert not any(Path(f).exists() for f in files["old-acme"])
    assert all(Path(f).exists() for run in ("new-acme", "old-beta", "new-beta") for f in files[run])
    assert not set(files["old-acme"]) & _manifest_entries(tmp_path)
    assert len(Warehouse(tmp_path).table("events").metadata.snapshots) == 1
    # Applying it again deletes nothing more.
    [again] = apply_to_tables(tmp_path, {"acme": 5}, 0, NOW_MS)
    assert again.rows_deleted == {}


async def test_the_default_covers_tenants_without_a_setting_and_zero_keeps_forever(tmp_path: Path) -> None:
    files = _warehouse(tmp_path)
    [report] = apply_to_tables(tmp_path, {"acme": 0}, 5, NOW_MS)
    assert report.rows_deleted == {"beta": 12}
    assert not any(Path(f).exists() for f in files["old-beta"])
    assert all(Path(f).exists() for f in files["old-acme"])
    # Nothing configured anywhere: nothing is deleted.
    [kept] = apply_to_tables(tmp_path, {}, 0, NOW_MS)
    assert kept.skipped and kept.rows_deleted == {}


def test_the_sinks_offsets_survive_on_the_retention_snapshot(tmp_path: Path) -> None:
    """The Iceberg sink finds its committed offsets by walking back from the current snapshot: the
    snapshots that carried them are expired, so the retention's own snapshot carries them on."""
    table = fx.create_events(tmp_path)
    old = fx.run_events("acme", "old", NOW - dt.timedelta(days=10))
    path = fx.append(table, old)
    table = fx.catalog(tmp_path).load_table(("audit", "events"))
    table.add_files(fx.append_files(table, fx.run_events("acme", "new", NOW)), snapshot_properties=OFFSETS)
    apply_to_tables(tmp_path, {"acme": 1}, 0, NOW_MS)
    current = Warehouse(tmp_path).table("events").current_snapshot()
    assert current is not None and current.summary is not None
    assert {k: current.summary[k] for k in OFFSETS} == OFFSETS
    assert not Path(path[0]).exists()


async def test_long_tenant_ids_whose_bounds_are_truncated_go_too(tmp_path: Path) -> None:
    """Column bounds keep 16 characters of a string: a longer tenant id cannot be proved from them,
    so the file is read, and since every row of a (day, tenant) file matches it goes whole,
    without a rewrite (which would need pyiceberg's Rust extension for the day transform)."""
    tenant = "tenant-with-a-rather-long-identifier"
    table = fx.create_events(tmp_path)
    old = fx.append(table, fx.run_events(tenant, "old", NOW - dt.timedelta(days=10)))
    table = fx.catalog(tmp_path).load_table(("audit", "events"))
    fx.append(table, fx.run_events(tenant + "-2", "kept", NOW - dt.timedelta(days=10)))
    [report] = apply_to_tables(tmp_path, {tenant: 3}, 0, NOW_MS)
    assert report.rows_deleted == {tenant: 12} and not Path(old[0]).exists()
    assert [r[0] for r in (await run_query(tmp_path, "SELECT run_id FROM runs", tenant_id=None)).rows] == ["kept"]


def _blob_warehouse(root: Path) -> None:
    """acme: runs ended 10 days ago (one named like the `memory` scope), one ended today, one started
    10 days ago that ended today, one still running and one halted since 10 days; beta: one ended
    10 days ago."""
    table = fx.create_events(root)
    old = NOW - dt.timedelta(days=10)
    spanning = fx.run_events("acme", "run_spanning", old)
    spanning[-1]["journal_time"] = NOW  # its RunCompleted
    runs = [fx.run_events("acme", "run_old", old), fx.run_events("acme", "memory", old),
            fx.run_events("acme", "run_recent", NOW - dt.timedelta(minutes=5)), spanning,
            fx.run_events("acme", "run_live", old)[:-1], fx.flagged_run("acme", "run_halted", old),
            fx.run_events("beta", "run_old", old)]  # fmt: skip
    for events in runs:
        fx.append(table, events)
        table = fx.catalog(root).load_table(("audit", "events"))


async def _scopes(store: LocalBlobStore, tenant: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in await store.list_blobs(tenant):
        counts[entry.scope] = counts.get(entry.scope, 0) + 1
    return counts


async def test_the_blobs_of_runs_that_ended_before_the_cutoff_go_with_their_rows(tmp_path: Path) -> None:
    _blob_warehouse(tmp_path / "wh")
    store = LocalBlobStore(tmp_path / "blobs", LocalKeyProvider(tmp_path / "keys" / "master.json"))
    scopes = ["run_old", "memory", "run_recent", "run_spanning", "run_live", "run_halted"]
    for tenant, scope in [("acme", s) for s in scopes] + [("beta", "run_old")]:
        for n in range(2):
            await store.put(tenant, f"{tenant} {scope} {n}".encode(), scope=scope, kind="tool_result")
    report = await apply_retention(tmp_path / "wh", {"acme": 5}, 0, NOW_MS, blobs=store)
    assert report.blobs is not None
    assert (report.blobs.runs, report.blobs.blobs_deleted) == ({"acme": 1}, {"acme": 2})
    assert list(report.blobs.skipped) == ["acme/memory"]  # a run id naming a named scope: never deleted
    # Only the run that ended before acme's cutoff lost its blobs; live, halted, recent, spanning
    # runs, the memory scope and beta (kept forever) keep every one.
    assert await _scopes(store, "acme") == {s: 2 for s in scopes if s != "run_old"}
    assert await _scopes(store, "beta") == {"run_old": 2}
    # The rows went after the blobs, in the same apply.
    assert report.tables[0].rows_deleted["acme"] > 0
    ended = await run_query(tmp_path / "wh", "SELECT run_id FROM runs WHERE status = 'completed' ORDER BY 1",
                            tenant_id="acme")  # fmt: skip
    assert [r[0] for r in ended.rows] == ["run_recent", "run_spanning"]
    body = report.to_dict()
    assert body["blobs"]["blobs_deleted"] == {"acme": 2} and body["tables"][0]["table"] == "events"
    # Again: the ended run's record is gone, so nothing more is found; without a store, rows only.
    again = await apply_retention(tmp_path / "wh", {"acme": 5}, 0, NOW_MS, blobs=store)
    assert again.blobs is not None and again.blobs.runs == {} and again.blobs.skipped == {}
    assert (await apply_retention(tmp_path / "wh", {"acme": 5}, 0, NOW_MS, blobs=None)).blobs is None


async def test_a_blob_store_that_fails_leaves_every_row(tmp_path: Path) -> None:
    _blob_warehouse(tmp_path / "wh")
    refused = S3BlobStore(S3Target("b", endpoint_url="http://127.0.0.1:9", access_key_id="k", secret_access_key="s"),
                          LocalKeyProvider(tmp_path / "master.json"))  # fmt: skip
    before = await run_query(tmp_path / "wh", "SELECT count(*) FROM events", tenant_id=None)
    with pytest.raises(BlobStoreUnavailable):
        await apply_retention(tmp_path / "wh", {"acme": 5}, 0, NOW_MS, blobs=refused)
    assert (await run_query(tmp_path / "wh", "SELECT count(*) FROM events", tenant_id=None)).rows == before.rows


def test_cutoffs_fall_on_utc_day_starts() -> None:
    cut = cutoff_ms(NOW_MS, 3)
    assert cut % DAY_MS == 0 and NOW_MS - 4 * DAY_MS < cut <= NOW_MS - 3 * DAY_MS
    assert cutoff_ms(NOW_MS, 0) <= NOW_MS


def test_the_latest_setting_of_each_tenant_wins() -> None:
    events = [AuditRetentionSet(retention_key("acme"), "acme", 30, "op", 1), None,
              TenantBudgetSet("budget/acme", "acme", 1.0, 1, "op", 1),
              AuditRetentionSet(retention_key("beta"), "beta", 7, "op", 1),
              AuditRetentionSet(retention_key("acme"), "acme", 0, "op", 2)]  # fmt: skip
    assert retention_of(events) == {"acme": 0, "beta": 7}


def test_a_commit_conflict_with_the_connector_is_retried() -> None:
    attempts: list[int] = []

    def commit() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise CommitFailedException("Table has been updated by another process")
        return "done"

    assert _retry("test", commit) == "done" and len(attempts) == 3


@pytest.mark.parametrize("reader_type", [ControlReader, CatalogReader])
def test_control_tailers_ignore_the_retention_event(reader_type: type[ControlReader] | type[CatalogReader]) -> None:
    """Every processor tails the control topic through one of these: the new event type is read,
    decoded and ignored (no dead letter, no crash), and the records after it still apply."""
    settings = Settings("127.0.0.1:1", "t", Path("/nonexistent"), ModelSettings())
    reader = reader_type(settings)
    codec = AvroCodec()
    setting = AuditRetentionSet(retention_key("acme"), "acme", 30, "op", int(time.time() * 1000))
    budget = TenantBudgetSet("budget/acme", "acme", 5.0, 2, "op", 1)
    for event in (setting, budget):
        reader._apply(Message(topic="t.control", partition=0, offset=0, key=event.event_id.encode(),
                              value=codec.encode(event)))  # fmt: skip
    if isinstance(reader, ControlReader):
        assert reader.controls.budget("acme").usd_per_day == 5.0
    else:
        assert reader.catalog.policies == {}
    CostControls().apply(setting)
    ToolCatalog().apply(setting)
