"""The blob store: one protocol, two backends (a local directory, any S3 API), the same rules.

`SealedStore` holds everything the backends share, so both enforce the same guarantees: the
tenant check before any read, the size cap before any work, sealing (`sealing.py`) and the
verification on read. A backend only moves opaque sealed bytes under validated keys.

Key layout: `<tenant>/<scope>/<sha256>`, where the scope is the run the payload belongs to (or a
named scope such as "memory"). Deleting a run's blobs, when its retention ends, is one prefix
delete; deleting a tenant's, another. Content-addressed: putting the same bytes in the same scope
again yields the same handle (the object is rewritten whole, so a put also repairs a damaged one).

Async only: the backends' blocking calls (file I/O, boto3) run in worker threads, as do hashing
and sealing, which take tens of milliseconds for a payload of tens of megabytes.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Protocol

from agentstream.blobs.errors import BlobAccessDenied, BlobHandleInvalid, BlobTooLarge
from agentstream.blobs.handle import BlobHandle, check_kind, check_scope, check_tenant, scope_prefix
from agentstream.blobs.sealing import digest, max_stored_bytes, open_blob, seal_blob
from agentstream.credentials.keys import KeyProvider

DEFAULT_MAX_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class BlobEntry:
    """One stored object as a listing sees it (sizes are of the sealed object, not the payload)."""

    tenant_id: str
    scope: str
    sha256: str
    stored_bytes: int


class BlobStore(Protocol):
    @property
    def max_bytes(self) -> int: ...

    async def put(self, tenant_id: str, data: bytes, *, scope: str, kind: str) -> BlobHandle:
        """Stores `data` for `tenant_id` under `scope` (a run id); `BlobTooLarge` over the cap."""
        ...

    async def get(self, tenant_id: str, handle: BlobHandle) -> bytes:
        """The payload, verified; `BlobAccessDenied`, `BlobMissing` or `BlobCorrupted`, never b""
        in place of a payload that was not empty."""
        ...

    async def delete(self, tenant_id: str, handle: BlobHandle) -> None: ...

    async def delete_prefix(self, tenant_id: str, scope: str | None = None) -> int:
        """Deletes every blob of one scope (a run's, when its retention ends) or of the whole tenant;
        returns how many objects went."""
        ...

    async def list_blobs(self, tenant_id: str, scope: str | None = None) -> list[BlobEntry]: ...

    async def close(self) -> None: ...


def entry_of(key: str, stored_bytes: int) -> BlobEntry | None:
    """The entry of an object key of ours; None for anything else in the bucket or directory."""
    parts = key.split("/")
    if len(parts) != 3:
        return None
    try:
        handle = BlobHandle(parts[0], parts[1], parts[2], 0)
    except BlobHandleInvalid:
        return None
    return BlobEntry(handle.tenant_id, handle.scope, handle.sha256, stored_bytes)


class SealedStore(ABC):
    """A `BlobStore` over a backend of opaque objects (`_write`, `_read`, ...)."""

    def __init__(self, provider: KeyProvider, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._provider = provider
        self._max_bytes = max_bytes

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    async def put(self, tenant_id: str, data: bytes, *, scope: str, kind: str) -> BlobHandle:
        check_tenant(tenant_id)
        check_scope(scope)
        check_kind(kind)
        if len(data) > self._max_bytes:
            raise BlobTooLarge(f"a {kind} payload of {len(data)} bytes is over the blob cap of {self._max_bytes} bytes")
        sha = await asyncio.to_thread(digest, data)
        handle = BlobHandle(tenant_id, scope, sha, len(data))
        sealed = await asyncio.to_thread(seal_blob, self._provider, handle, kind, data)
        await self._write(handle.key, sealed)
        return handle

    async def get(self, tenant_id: str, handle: BlobHandle) -> bytes:
        self._check_access(tenant_id, handle)
        if handle.size > self._max_bytes:
            raise BlobTooLarge(f"blob {handle.key} claims {handle.size} bytes, over the cap of {self._max_bytes}")
        stored = await self._read(handle.key, max_stored_bytes(handle.size))
        _, plaintext = await asyncio.to_thread(open_blob, self._provider, handle, stored)
        return plaintext

    async def delete(self, tenant_id: str, handle: BlobHandle) -> None:
        self._check_access(tenant_id, handle)
        await self._delete(handle.key)

    async def delete_prefix(self, tenant_id: str, scope: str | None = None) -> int:
        return await self._delete_prefix(scope_prefix(tenant_id, scope))

    async def list_blobs(self, tenant_id: str, scope: str | None = None) -> list[BlobEntry]:
        prefix = scope_prefix(tenant_id, scope)
        listed = await self._list(prefix)
        entries = [entry_of(key, size) for key, size in listed if key.startswith(prefix)]
        return sorted((e for e in entries if e is not None), key=lambda e: (e.scope, e.sha256))

    async def close(self) -> None:
        return None

    @staticmethod
    def _check_access(tenant_id: str, handle: BlobHandle) -> None:
        check_tenant(tenant_id)
        if not isinstance(handle, BlobHandle):
            raise TypeError(
                f"a BlobHandle is needed (parse strings with BlobHandle.parse), not {type(handle).__name__}"
            )
        if handle.tenant_id != tenant_id:
            raise BlobAccessDenied(f"tenant {tenant_id} may not read or delete a blob of tenant {handle.tenant_id}")

    @abstractmethod
    async def _write(self, key: str, sealed: bytearray) -> None:
        """Stores the object whole or not at all (a reader never sees half of it)."""

    @abstractmethod
    async def _read(self, key: str, limit: int) -> bytes:
        """The object's bytes; `BlobMissing` when absent, `BlobCorrupted` when over `limit` bytes."""

    @abstractmethod
    async def _delete(self, key: str) -> None: ...

    @abstractmethod
    async def _delete_prefix(self, prefix: str) -> int: ...

    @abstractmethod
    async def _list(self, prefix: str) -> list[tuple[str, int]]: ...
