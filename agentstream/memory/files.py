"""A tenant's memory files over the index and the blob store: reads, and writes within the caps.

Every operation takes the tenant explicitly (the tool executor passes the run's, from the signed
authorization) and touches only that tenant's index entries and blobs: the blob store checks the
tenant again on every read. A write puts the content in the tenant's blob store (scope "memory",
kind "memory"; content-addressed and sealed), then journals the file's new record on the
`memory` topic (acknowledged before the call returns), then applies it to this process's index.
A blob no file refers to any more is deleted after the record that dropped it is written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agentstream.blobs import BlobCorrupted, BlobError, BlobHandle, BlobMissing, BlobStore
from agentstream.events import MemoryFileSet
from agentstream.memory.index import MemoryFile, MemoryIndex
from agentstream.memory.paths import ROOT, MemoryRefused, is_under, parent_dirs, record_key

SCOPE = "memory"  # the named blob scope (agentstream.blobs.scopes.NAMED_SCOPES): no retention deletes it
KIND = "memory"
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Caps:
    max_file_bytes: int
    max_tenant_bytes: int
    max_files: int


class MemoryFiles:
    def __init__(
        self,
        index: MemoryIndex,
        open_store: Callable[[], BlobStore],
        publish: Callable[[MemoryFileSet], Awaitable[None]],
        caps: Caps,
        clock: Callable[[], int],
    ) -> None:
        self.index = index
        self.caps = caps
        self._open_store = open_store
        self._store: BlobStore | None = None
        self._publish = publish
        self._clock = clock
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, tenant_id: str) -> asyncio.Lock:
        """Serializes one tenant's writes in this process (a read-modify-write sees no other)."""
        return self._locks.setdefault(tenant_id, asyncio.Lock())

    def store(self) -> BlobStore:
        if self._store is None:
            self._store = self._open_store()
        return self._store

    def files(self, tenant_id: str) -> dict[str, MemoryFile]:
        return self.index.files(tenant_id)

    def is_directory(self, tenant_id: str, path: str) -> bool:
        return path == ROOT or any(is_under(p, path) for p in self.index.files(tenant_id))

    async def read(self, tenant_id: str, path: str) -> str:
        file = self.index.get(tenant_id, path)
        if file is None:
            raise MemoryRefused(f"no file {path}")
        try:
            data = await self.store().get(tenant_id, BlobHandle.parse(file.blob))
        except BlobMissing:
            raise MemoryRefused(f"the content of {path} is missing from the blob store") from None
        except BlobCorrupted:
            raise MemoryRefused(f"the content of {path} failed verification (damaged); nothing is returned") from None
        except BlobError as exc:
            log.warning("memory read of %s for %s failed: %s: %s", path, tenant_id, type(exc).__name__, exc)
            raise MemoryRefused(f"the blob store is unavailable ({type(exc).__name__}); try again later") from None
        return data.decode("utf-8")

    async def write(self, tenant_id: str, path: str, text: str, run_id: str) -> MemoryFile:
        """Creates or replaces one file, within the caps."""
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            raise MemoryRefused(
                f"the text for {path} holds an unpaired surrogate; memory files hold UTF-8 text"
            ) from None
        self._check_placement(tenant_id, path)
        self._check_fits(tenant_id, {path: len(data)}, set())
        try:
            handle = await self.store().put(tenant_id, data, scope=SCOPE, kind=KIND)
        except BlobError as exc:
            log.warning("memory write of %s for %s failed: %s: %s", path, tenant_id, type(exc).__name__, exc)
            raise MemoryRefused(f"the blob store is unavailable ({type(exc).__name__}); nothing was written") from None
        old = self.index.get(tenant_id, path)
        await self._set(tenant_id, path, str(handle), len(data), run_id)
        if old is not None:
            await self._collect(tenant_id, [old])
        return self.index.get(tenant_id, path) or MemoryFile(path, str(handle), len(data), 0, 0)

    async def delete(self, tenant_id: str, paths: list[str], run_id: str) -> None:
        gone = [f for p in paths if (f := self.index.get(tenant_id, p)) is not None]
        for file in gone:
            await self._set(tenant_id, file.path, "", 0, run_id)
        await self._collect(tenant_id, gone)

    async def move(self, tenant_id: str, moves: dict[str, str], run_id: str) -> None:
        """Renames files (old path -> new path): each new record first, then the old ones deleted,
        so a crash in between leaves a copy, never a loss. The blobs stay where they are."""
        files = self.index.files(tenant_id)
        self._check_fits(tenant_id, {new: files[old].size for old, new in moves.items()}, set(moves))
        for new in moves.values():
            self._check_placement(tenant_id, new, leaving=set(moves))
        for old, new in moves.items():
            await self._set(tenant_id, new, files[old].blob, files[old].size, run_id)
        for old in moves:
            await self._set(tenant_id, old, "", 0, run_id)

    def _check_fits(self, tenant_id: str, sizes: dict[str, int], leaving: set[str]) -> None:
        caps = self.caps
        for path, size in sizes.items():
            if size > caps.max_file_bytes:
                raise MemoryRefused(
                    f"{path} would hold {size} bytes, over the cap of {caps.max_file_bytes} bytes per memory file; "
                    "nothing was written"
                )
        files = {p: f.size for p, f in self.index.files(tenant_id).items() if p not in leaving}
        after = {**files, **sizes}
        total = sum(after.values())
        if total > caps.max_tenant_bytes and total > sum(files.values()):
            raise MemoryRefused(
                f"this tenant's memory would hold {total} bytes, over its cap of {caps.max_tenant_bytes} bytes; "
                "nothing was written (delete or shorten files first)"
            )
        if len(after) > caps.max_files and len(after) > len(files):
            raise MemoryRefused(
                f"this tenant's memory would hold {len(after)} files, over its cap of {caps.max_files}; "
                "nothing was written (delete files first)"
            )

    def _check_placement(self, tenant_id: str, path: str, leaving: frozenset[str] | set[str] = frozenset()) -> None:
        files = {p for p in self.index.files(tenant_id) if p not in leaving}
        if any(is_under(p, path) for p in files):
            raise MemoryRefused(f"{path} is a directory; a file cannot take its place")
        for parent in parent_dirs(path):
            if parent in files:
                raise MemoryRefused(f"{parent} is a file, so {path} cannot be created under it")

    async def _set(self, tenant_id: str, path: str, blob: str, size: int, run_id: str) -> None:
        event = MemoryFileSet(
            event_id=record_key(tenant_id, path), tenant_id=tenant_id, path=path, blob=blob, size=size,
            version=self.index.version(tenant_id, path) + 1, updated_ms=self._clock(), deleted=not blob,
            run_id=run_id,
        )  # fmt: skip
        await self._publish(event)  # acknowledged: the index topic is the state
        self.index.apply(event)  # read-your-writes in this process

    async def _collect(self, tenant_id: str, dropped: list[MemoryFile]) -> None:
        """Deletes the blobs of `dropped` files that no file of the tenant refers to any more."""
        live = {f.blob for f in self.index.files(tenant_id).values()}
        for blob in sorted({f.blob for f in dropped} - live):
            try:
                await self.store().delete(tenant_id, BlobHandle.parse(blob))
            except BlobError as exc:  # an orphan left behind costs space, not correctness
                log.warning("memory blob %s of %s not deleted: %s", blob, tenant_id, exc)

    async def aclose(self) -> None:
        if self._store is not None:
            await self._store.close()
            self._store = None
