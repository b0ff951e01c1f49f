"""The platform's own Connect worker, built from its settings: data in `<home>/connect`, the
worker's principal from the credentials store (created on the broker on first start, as the
local broker does for every component), its topics and ACLs from topics.yaml."""

from __future__ import annotations

from pathlib import Path

from agentstream.config import Settings
from agentstream.connect.journal import converter_plugins, journal_sink
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
                         plugin_dirs=plugin_dirs)  # fmt: skip


async def warehouse_plugins(settings: Settings) -> tuple[Path, ...]:
    """The journal's converter, built into `<home>/connect/plugins` when it is missing or stale."""
    return (await converter_plugins(settings.home / "connect" / "plugins"),)


async def register_journal(settings: Settings, worker: ConnectWorker,
                           warehouse: WarehouseSettings | None = None) -> IcebergSink:  # fmt: skip
    """The journal's sink registered (idempotent: a PUT of its configuration) and running."""
    wh = warehouse or load(WarehouseSettings)
    table_props: dict[str, str] = {"iceberg.tables.auto-create-props.write.format.default": wh.file_format}
    sink = journal_sink(settings.topic_prefix, wh.resolved_warehouse(settings.home), wh.commit_interval_s, table_props)
    await sink.register(worker)
    await sink.wait_running(worker, timeout_s=120)
    return sink


async def ensure_principal(settings: Settings, worker: ConnectWorker) -> None:
    """The worker's SCRAM user on the broker (re-set each start: cheap, and it repairs a broker
    that predates the `connect` component). Needs the admin's settings, as `topics create` does."""
    if worker.principal is not None and settings.uses_local_broker:
        await upsert_users(settings.bootstrap_servers, settings.kafka_extra, [worker.principal])
