"""The memory API: the calling key's tenant's long-term memory files, listed (no contents) and
exported (contents read from the blob store as that tenant, verified).

The tenant is always the key's: neither operation takes a tenant, a path or any other parameter,
so no request can name another tenant's memory. The index is the `memory` topic's projection
(the gateway principal may read it), and the blob store checks the tenant again on every read.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from starlette.requests import Request
from starlette.responses import Response

from agentstream.blobs import BlobStore, BlobStoreUnavailable
from agentstream.config import Settings
from agentstream.contract.resources import MemoryExport, MemoryFile, MemoryPage
from agentstream.gateway.errors import ApiError, model_response
from agentstream.memory.admin import export_memory, list_memory
from agentstream.memory.index import MemoryIndex

log = logging.getLogger(__name__)


class _Caller(Protocol):
    @property
    def tenant_id(self) -> str: ...


MemoryHandler = Callable[[Request, _Caller], Awaitable[Response]]


class MemoryApi:
    def __init__(
        self, settings: Settings, index: MemoryIndex, open_store: Callable[[], BlobStore], max_bytes: int
    ) -> None:
        self.settings = settings
        self.index = index
        self.max_bytes = max_bytes  # the most content one export carries: the tenant cap of memory
        self._open_store = open_store
        self._store: BlobStore | None = None

    def store(self) -> BlobStore:
        """Opened on first use: a gateway whose tenants never export needs no blob store."""
        if self._store is None:
            try:
                self._store = self._open_store()
            except BlobStoreUnavailable as exc:
                log.warning("memory export: the blob store cannot be opened: %s", exc)
                raise ApiError(503, "blob_store_unavailable", "the blob store cannot be reached; try again",
                               headers={"Retry-After": "5"}) from None  # fmt: skip
        return self._store

    async def list(self, tenant_id: str) -> Response:
        self.index.refresh()  # a file written a moment ago is listed (the background poll also runs)
        files = await list_memory(self.settings, tenant_id, self.index)
        rows = [MemoryFile(path=f.path, size=f.size, version=f.version, updated_ms=f.updated_ms) for f in files]
        return model_response(MemoryPage(data=rows))

    async def export(self, tenant_id: str) -> Response:
        self.index.refresh()
        found = await export_memory(self.settings, tenant_id, self.store(), self.index, self.max_bytes)
        body = MemoryExport(files=found.files, errors=found.errors, max_bytes=self.max_bytes, truncated=found.truncated)
        return model_response(body)

    async def aclose(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            await store.close()


def memory_handlers(api: MemoryApi | None) -> dict[str, MemoryHandler]:
    """The gateway's handlers of `listMemory` and `exportMemory` (404 where no memory is served)."""

    def served() -> MemoryApi:
        if api is None:
            raise ApiError(404, "not_found", "memory is not served by this gateway")
        return api

    async def list_files(_request: Request, caller: _Caller) -> Response:
        return await served().list(caller.tenant_id)

    async def export(_request: Request, caller: _Caller) -> Response:
        return await served().export(caller.tenant_id)

    return {"listMemory": list_files, "exportMemory": export}
