"""A tenant's memory as the operator (CLI) or the gateway sees it: the listing from the `memory`
topic, and the export (path -> content), read from the blob store as that tenant."""

from __future__ import annotations

from dataclasses import dataclass

from agentstream.blobs import BlobCorrupted, BlobError, BlobHandle, BlobMissing, BlobStore
from agentstream.config import Settings
from agentstream.memory.index import MemoryFile, MemoryIndex
from agentstream.tenancy.admin import TenancyError, validate_tenant_id


class MemoryAdminError(Exception):
    """A listing or export that cannot be made (a bad tenant id)."""


@dataclass(frozen=True, slots=True)
class MemoryExport:
    files: dict[str, str]  # path -> content
    errors: dict[str, str]  # path -> why its content could not be read (never an empty text instead)
    truncated: bool = False  # files were left out (named in errors) at `max_bytes`


async def read_memory_index(settings: Settings) -> MemoryIndex:
    """The whole index, read to the topic's current end."""
    async with MemoryIndex(settings) as index:  # read whole, then its reader closed
        return index


def _tenant(tenant_id: str) -> str:
    try:
        return validate_tenant_id(tenant_id)
    except TenancyError as exc:
        raise MemoryAdminError(str(exc)) from None


async def list_memory(settings: Settings, tenant_id: str, index: MemoryIndex | None = None) -> list[MemoryFile]:
    tenant = _tenant(tenant_id)
    index = index or await read_memory_index(settings)
    return sorted(index.files(tenant).values(), key=lambda f: f.path)


async def export_memory(
    settings: Settings,
    tenant_id: str,
    store: BlobStore,
    index: MemoryIndex | None = None,
    max_bytes: int | None = None,
) -> MemoryExport:
    """Every file of the tenant with its content, each read as the tenant and verified. With
    `max_bytes`, files in path order up to that many bytes of content: the rest are named in
    `errors`, unread (the write caps bound a tenant's memory, but a lowered cap leaves older files)."""
    tenant = _tenant(tenant_id)
    files: dict[str, str] = {}
    errors: dict[str, str] = {}
    total, truncated = 0, False
    for file in await list_memory(settings, tenant, index):
        if max_bytes is not None and (truncated or total + file.size > max_bytes):
            truncated = True
            errors[file.path] = f"not exported: the export is capped at {max_bytes} bytes of content"
            continue
        total += file.size
        try:
            files[file.path] = (await store.get(tenant, BlobHandle.parse(file.blob))).decode("utf-8")
        except BlobMissing:
            errors[file.path] = f"its blob {file.blob} is missing"
        except BlobCorrupted:
            errors[file.path] = f"its blob {file.blob} failed verification (damaged)"
        except BlobError as exc:
            errors[file.path] = f"{type(exc).__name__}: {exc}"
    return MemoryExport(files, errors, truncated)
