"""Runs the gateway: the run projection, the tenant directory and the ASGI app under uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
from collections.abc import AsyncIterator, Callable

import uvicorn
from confluent_kafka import Message

from agentstream.blobs.factory import open_blob_store
from agentstream.client.journal import JournalClient, type_of
from agentstream.codec import AvroCodec, DecodeError
from agentstream.config import Settings
from agentstream.connect.location import reader_catalog
from agentstream.credentials.signing_keys import issue_missing_bundle
from agentstream.events import RunEvent
from agentstream.gateway.app import Caller, Gateway, GatewayConfig
from agentstream.gateway.approvals_api import ApprovalsApi
from agentstream.gateway.audit_api import AuditApi
from agentstream.gateway.history import RunHistory
from agentstream.gateway.memory_api import MemoryApi
from agentstream.gateway.projection import HistoryLimits, RunIndex
from agentstream.gateway.tools_api import ToolsApi
from agentstream.memory.index import MemoryIndex
from agentstream.metrics.endpoint import metrics_listener
from agentstream.metrics.gateway import EventStreams, api_port_route, gateway_registry
from agentstream.observability.tracing import TRACING, start_tracing
from agentstream.registry.entry import TenantPolicy
from agentstream.registry.reader import CatalogReader
from agentstream.security.journal_trust import ViewVerifier, journal_auth_enabled
from agentstream.security.signing import approval_verifies, platform_signers
from agentstream.settings import MemorySettings, MetricsSettings, WarehouseSettings, load
from agentstream.tenancy.directory import Principal, TenantDirectory
from agentstream.tenancy.ratelimit import RateLimiter


class TenantRates:
    """Adapts the per-tenant token buckets to the gateway's rate check."""

    def __init__(self, directory: TenantDirectory) -> None:
        self._directory = directory
        self._limiter = RateLimiter()

    def retry_after(self, caller: Caller) -> float:
        tenant = self._directory.tenant(caller.tenant_id)
        return 0.0 if tenant is None else self._limiter.try_acquire(tenant)


class KeyAuthenticator:
    """Adapts the tenant directory to the gateway's authentication: the caller is the key's
    principal (tenant, key id and scopes), so every route can check the key's scope."""

    def __init__(self, directory: TenantDirectory) -> None:
        self._directory = directory

    def authenticate(self, authorization: str | None) -> Principal | None:
        return self._directory.principal(authorization)

    async def authenticate_fresh(self, authorization: str | None) -> Principal | None:
        found = await self._directory.identify_fresh(authorization)
        return None if found is None else Principal(*found)


def projection_check(checks: ViewVerifier) -> Callable[[Message], str | None]:
    """Why the run projection must not show a journal record (None: it may)."""
    codec = AvroCodec()

    def problem(msg: Message) -> str | None:
        if (found := checks.problem(msg)) is not None:
            return found
        if type_of(msg) != "RunRequested":
            return None
        try:
            event = codec.decode(msg.value())
        except DecodeError as exc:
            return str(exc)
        # A run is shown only if the gateway or an operator created it for that tenant.
        return checks.run_proof_problem(msg, event.tenant_id, event.run_id) if isinstance(event, RunEvent) else None

    return problem


@contextlib.asynccontextmanager
async def running_gateway(
    settings: Settings, host: str = "127.0.0.1", port: int = 8080, config: GatewayConfig | None = None
) -> AsyncIterator[str]:
    """Serves the run API until the block exits; yields its base URL (port 0 picks a free one)."""
    stop = asyncio.Event()
    # Only the gateway's own bundle: the approval key, its journal key and the run-request key.
    issue_missing_bundle(settings, "gateway")
    signers = platform_signers(settings, "gateway")
    approval = signers.approval
    checks = projection_check(ViewVerifier(signers.keyring)) if journal_auth_enabled() else None
    # The run index and checkpoint: a start reads what is live and recent, older runs on demand.
    history = RunHistory(settings)
    index = RunIndex(
        settings, lambda event: approval_verifies(approval, event), checks, history, HistoryLimits.of(settings.gateway)
    )
    directory = TenantDirectory(settings)
    await directory.start()
    # The `memory` topic's projection, kept current like the tenant directory (GET /v1/memory).
    memory_index = MemoryIndex(settings)
    await memory_index.start()
    journal = JournalClient(settings, writer="gateway")
    background = [
        asyncio.create_task(index.run(stop)),
        asyncio.create_task(directory.run(stop)),
        asyncio.create_task(history.follow_index(stop)),
        asyncio.create_task(memory_index.run(stop)),
    ]
    await _caught_up(index, background[0])
    registry = CatalogReader(settings)
    await registry.start()

    def policy_of(tenant_id: str) -> TenantPolicy:
        registry.refresh()  # a policy just changed (allow_self_approval) counts for the next decision
        return registry.catalog.policy(tenant_id)

    approvals = ApprovalsApi(index, journal, signers.approval, directory.identify, policy_of)
    tools = ToolsApi(settings, registry)
    audit = _audit(settings)
    index.archive = audit.run_entries
    memory = MemoryApi(settings, memory_index, lambda: open_blob_store(settings),
                       load(MemorySettings).max_tenant_bytes)  # fmt: skip
    gateway = Gateway(
        index, journal, KeyAuthenticator(directory), TenantRates(directory), config, approvals, tools, audit, memory
    )
    # Long-lived by now (modules, the app, what the projection read): frozen out of the collector's
    # scans, so a full collection while serving costs what changes, not a ~200 ms pause on a stream.
    gc.collect()
    gc.freeze()
    app = gateway.app()
    streams = EventStreams(app)  # counts the open event streams for /metrics
    metrics, scrape = gateway_registry(index, streams), load(MetricsSettings)
    app.add_route("/metrics", api_port_route(metrics, scrape.token), methods=["GET"])
    server = uvicorn.Server(
        uvicorn.Config(streams, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()  # re-raises why it could not start (e.g. the port is taken)
        await asyncio.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        async with metrics_listener(metrics, scrape, settings.home, "gateway", "0"):
            yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        await serving
        stop.set()
        await asyncio.gather(*background, return_exceptions=True)
        await history.aclose()
        await journal.aclose()
        await memory.aclose()
        memory_index.close()
        directory.close()
        registry.close()


def _audit(settings: Settings) -> AuditApi:
    """The audit API over this host's warehouse (the embedded one, or a directory shared with the
    Connect workers: AGENTSTREAM_WAREHOUSE_DIR); it answers 503 until the warehouse has tables."""
    return AuditApi(load(WarehouseSettings).resolved_warehouse(settings.home), reader_catalog(settings))


async def _caught_up(index: RunIndex, tail: asyncio.Task[None]) -> None:
    """Until the projection has read what it must before serving: from its checkpoint, seconds;
    a first start (no checkpoint: the whole journal, building the run index) may take minutes,
    so it says how far it got instead of giving up."""
    while True:
        try:
            await index.ready(10.0)
            return
        except TimeoutError:
            if tail.done():
                tail.result()  # re-raises why the journal reader stopped
                raise RuntimeError("the journal reader stopped before it caught up") from None
            print(f"agentstream gateway: reading the journal: {index.records_read} records so far", file=sys.stderr)


async def serve_gateway(settings: Settings, host: str, port: int, stop: asyncio.Event) -> None:
    start_tracing("gateway")  # its journal writes carry their run's trace context (agentstream/observability)
    async with running_gateway(settings, host, port) as url:
        print(f"agentstream gateway: serving the run API at {url} (OpenAPI: {url}/openapi.json)", flush=True)
        await stop.wait()
    TRACING.shutdown()
