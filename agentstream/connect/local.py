"""The platform's own Connect worker, built from its settings: data in `<home>/connect`, the
worker's principal from the credentials store (created on the broker on first start, as the
local broker does for every component), its topics and ACLs from topics.yaml."""

from __future__ import annotations

from agentstream.config import Settings
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


def local_worker(settings: Settings, warehouse: WarehouseSettings | None = None) -> ConnectWorker:
    wh = warehouse or load(WarehouseSettings)
    return ConnectWorker(settings.home / "connect", settings.bootstrap_servers, settings.topic_prefix,
                         _principal(settings), port=wh.connect_port, heap=wh.connect_heap)  # fmt: skip


async def ensure_principal(settings: Settings, worker: ConnectWorker) -> None:
    """The worker's SCRAM user on the broker (re-set each start: cheap, and it repairs a broker
    that predates the `connect` component). Needs the admin's settings, as `topics create` does."""
    if worker.principal is not None and settings.uses_local_broker:
        await upsert_users(settings.bootstrap_servers, settings.kafka_extra, [worker.principal])
