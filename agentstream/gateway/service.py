"""Runs the gateway: the run projection, the tenant directory and the ASGI app under uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import uvicorn

from agentstream.client.journal import JournalClient
from agentstream.config import Settings
from agentstream.gateway.app import Caller, Gateway, GatewayConfig
from agentstream.gateway.approvals_api import ApprovalsApi
from agentstream.gateway.projection import RunIndex
from agentstream.gateway.tools_api import ToolsApi
from agentstream.registry.reader import CatalogReader
from agentstream.security.signing import approval_verifies, platform_signers
from agentstream.tenancy.directory import TenantDirectory
from agentstream.tenancy.ratelimit import RateLimiter


class TenantRates:
    """Adapts the per-tenant token buckets to the gateway's rate check."""

    def __init__(self, directory: TenantDirectory) -> None:
        self._directory = directory
        self._limiter = RateLimiter()

    def retry_after(self, caller: Caller) -> float:
        tenant = self._directory.tenant(caller.tenant_id)
        return 0.0 if tenant is None else self._limiter.try_acquire(tenant)


@contextlib.asynccontextmanager
async def running_gateway(
    settings: Settings, host: str = "127.0.0.1", port: int = 8080, config: GatewayConfig | None = None
) -> AsyncIterator[str]:
    """Serves the run API until the block exits; yields its base URL (port 0 picks a free one)."""
    stop = asyncio.Event()
    signers = platform_signers(settings)
    index = RunIndex(settings, lambda event: approval_verifies(signers.approval, event))
    directory = TenantDirectory(settings)
    await directory.start()
    journal = JournalClient(settings)
    background = [asyncio.create_task(index.run(stop)), asyncio.create_task(directory.run(stop))]
    await index.ready()
    approvals = ApprovalsApi(index, journal, signers.approval, directory.identify)
    registry = CatalogReader(settings)
    await registry.start()
    tools = ToolsApi(settings, registry)
    gateway = Gateway(index, journal, directory, TenantRates(directory), config, approvals, tools)
    server = uvicorn.Server(
        uvicorn.Config(gateway.app(), host=host, port=port, log_level="warning", access_log=False, lifespan="off")
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()  # re-raises why it could not start (e.g. the port is taken)
        await asyncio.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        await serving
        stop.set()
        await asyncio.gather(*background, return_exceptions=True)
        await journal.aclose()
        directory.close()
        registry.close()


async def serve_gateway(settings: Settings, host: str, port: int, stop: asyncio.Event) -> None:
    async with running_gateway(settings, host, port) as url:
        print(f"agentstream gateway: serving the run API at {url} (OpenAPI: {url}/openapi.json)", flush=True)
        await stop.wait()
