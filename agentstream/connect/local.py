"""The platform's own Connect worker, built from its settings: data in `<home>/connect`, the
worker's principal from the credentials store (created on the broker on first start, as the
local broker does for every component), its topics and ACLs from topics.yaml."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable
from pathlib import Path

from agentstream.config import Settings
from agentstream.connect.catalog import ensure_catalog
from agentstream.connect.journal import JOURNAL_CONNECTOR, converter_plugins, journal_sink
from agentstream.connect.location import SECRETS_FILE, WarehouseLocation, ensure_bucket, warehouse_location
from agentstream.connect.registry import REGISTRY_CONNECTOR, TABLES, registry_sink
from agentstream.connect.sink import IcebergSink
from agentstream.connect.worker import ConnectWorker, ConnectWorkerError
from agentstream.kafka.auth import CONNECT, CredentialStore, Principal, upsert_users
from agentstream.settings import WarehouseSettings, load


def _principal(settings: Settings) -> Principal | None:
    if settings.kafka_credentials_dir is None:
        if "sasl.username" in settings.kafka_extra:
            raise ConnectWorkerError(
                "the Connect worker needs its own principal: set AGENTSTREAM_KAFKA_CREDENTIALS_DIR to a directory "
                f"holding {CONNECT}.json (see docs/security.md)"
            )
        return None  # a broker without SASL
    return CredentialStore(settings.kafka_credentials_dir).ensure(CONNECT)


def local_worker(settings: Settings, warehouse: WarehouseSettings | None = None,
                 plugin_dirs: tuple[Path, ...] = ()) -> ConnectWorker:  # fmt: skip
    wh = warehouse or load(WarehouseSettings)
    return ConnectWorker(settings.home / "connect", settings.bootstrap_servers, settings.topic_prefix,
                         _principal(settings), port=wh.connect_port, heap=wh.connect_heap,
                         plugin_dirs=plugin_dirs, s3=wh.enabled and wh.storage == "s3")  # fmt: skip


def secrets_file(settings: Settings) -> Path:
    return settings.home / "connect" / SECRETS_FILE


def _write_secrets(path: Path, content: str | None) -> None:
    """The worker's secrets file (0600 before anything is in it), or none when nothing is secret."""
    if content is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(content)


async def warehouse_plugins(settings: Settings) -> tuple[Path, ...]:
    """The journal's converter, built into `<home>/connect/plugins` when it is missing or stale."""
    return (await converter_plugins(settings.home / "connect" / "plugins"),)


def warehouse_sinks(settings: Settings, warehouse: WarehouseSettings | None = None,
                    location: WarehouseLocation | None = None) -> list[IcebergSink]:  # fmt: skip
    """The journal's sink and the registry's (tenants, tools.catalog, control), as configured."""
    wh = warehouse or load(WarehouseSettings)
    table_props: dict[str, str] = {"iceberg.tables.auto-create-props.write.format.default": wh.file_format}
    where, interval = wh.resolved_warehouse(settings.home), wh.commit_interval_s
    sinks = [journal_sink(settings.topic_prefix, where, interval, table_props),
             registry_sink(settings.topic_prefix, where, interval, table_props)]  # fmt: skip
    catalog = (location or warehouse_location(settings, wh)).connector_catalog(secrets_file(settings))
    return [dataclasses.replace(sink, catalog=catalog) for sink in sinks] if catalog else sinks


async def register_sinks(settings: Settings, worker: ConnectWorker, warehouse: WarehouseSettings | None = None,
                         only: tuple[str, ...] | None = None) -> list[IcebergSink]:  # fmt: skip
    """The warehouse's sinks (`only` these names, when given) registered and running: their
    namespaces and the registry's tables created first (connect/catalog.py), then each
    configuration PUT (idempotent)."""
    wh = warehouse or load(WarehouseSettings)
    location = warehouse_location(settings, wh)
    sinks = [s for s in warehouse_sinks(settings, wh, location) if only is None or s.name in only]
    tables = tuple(TABLES.values()) if any(s.name == REGISTRY_CONNECTOR for s in sinks) else ()
    await asyncio.to_thread(ensure_bucket, location)
    _write_secrets(secrets_file(settings), location.worker_secrets())
    await ensure_catalog(sinks[0].warehouse, {ns for sink in sinks for ns in sink.namespaces}, tables,
                         {"write.format.default": wh.file_format, "write.parquet.compression-codec": "zstd"},
                         location.reader_catalog())  # fmt: skip
    for sink in sinks:
        await sink.register(worker)
    for sink in sinks:
        await sink.wait_running(worker, timeout_s=120)
    return sinks


async def register_journal(settings: Settings, worker: ConnectWorker,
                           warehouse: WarehouseSettings | None = None) -> IcebergSink:  # fmt: skip
    """The journal's sink alone registered and running (the benchmark's)."""
    return (await register_sinks(settings, worker, warehouse, only=(JOURNAL_CONNECTOR,)))[0]


async def start_warehouse(settings: Settings, warehouse: WarehouseSettings | None = None,
                          ) -> tuple[ConnectWorker, float, list[IcebergSink]]:  # fmt: skip
    """The worker with the converter built, started (unless it answers already) and both sinks
    registered: what `connect start` and `dev` do with the warehouse on, once the topics and
    their ACLs exist (`ensure_topics`). Returns the worker, its start time and the sinks."""
    wh = warehouse or load(WarehouseSettings)
    worker = local_worker(settings, wh, await warehouse_plugins(settings))
    await ensure_principal(settings, worker)
    took = await worker.start()
    return worker, took, await register_sinks(settings, worker, wh)


async def ensure_principal(settings: Settings, worker: ConnectWorker) -> None:
    """The worker's SCRAM user on the broker (re-set each start: cheap, and it repairs a broker
    that predates the `connect` component). Needs the admin's settings, as `topics create` does."""
    if worker.principal is not None and settings.uses_local_broker:
        await upsert_users(settings.bootstrap_servers, settings.kafka_extra, [worker.principal])


async def supervise_worker(worker: ConnectWorker, stop: asyncio.Event, say: Callable[[str], None],
                           interval_s: float = 1.0) -> None:  # fmt: skip
    """Restarts the worker whenever its process died, until `stop` (what `dev` runs beside its
    broker supervisor). Its connectors come back by themselves: their configurations and offsets
    are in the worker's topics. One line per state change."""
    failing = ""
    while not stop.is_set():
        if worker.running_pid() is None:
            if not failing:
                say(f"Connect worker ({worker.url}) exited; restarting it")
                failing = "exited"
            try:
                await worker.start()
            except (ConnectWorkerError, OSError) as exc:
                reason = str(exc).splitlines()[0]
                if reason != failing:
                    say(f"Connect worker failed to restart, retrying: {reason}")
                    failing = reason
            else:
                failing = ""
                say("Connect worker is back")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
