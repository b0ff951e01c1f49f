"""The embedded blob store: a local directory (`<home>/blobs` by default), no service to run.

A blob is the file `<root>/<tenant>/<scope>/<sha256>`: every component comes from a validated
handle (closed alphabets, no '/', no '.'), never from caller text, and the final open refuses a
symlink. A write goes to a temporary file in the same folder, is synced, then renamed over the
name, so a reader sees the old object or the new one, never a half-written one. Folders are 0700
and files 0600: the objects are sealed, but the listing still says which tenants and runs exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from agentstream.blobs.errors import BlobCorrupted, BlobMissing, BlobStoreUnavailable
from agentstream.blobs.handle import is_digest
from agentstream.blobs.store import DEFAULT_MAX_BYTES, SealedStore
from agentstream.credentials.keys import KeyProvider


class LocalBlobStore(SealedStore):
    def __init__(self, root: Path, provider: KeyProvider, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        super().__init__(provider, max_bytes)
        self.root = root

    def path_of(self, key: str) -> Path:
        """The file of an object key (keys come from validated handles only)."""
        return self.root.joinpath(*key.split("/"))

    async def _write(self, key: str, sealed: bytearray) -> None:
        try:
            await asyncio.to_thread(self._write_sync, self.path_of(key), sealed)
        except OSError as exc:  # a full disk, a read-only folder, the scope deleted meanwhile
            raise BlobStoreUnavailable(f"blob {key} could not be written under {self.root}: {exc.strerror}") from None

    def _write_sync(self, path: Path, sealed: bytearray) -> None:
        # One level at a time: mkdir(parents=True) would give the parents the umask's mode.
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for folder in (path.parent.parent, path.parent):
            folder.mkdir(mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".put-", suffix=".tmp")  # created 0600
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(sealed)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    async def _read(self, key: str, limit: int) -> bytes:
        return await asyncio.to_thread(self._read_sync, key, limit)

    def _read_sync(self, key: str, limit: int) -> bytes:
        try:
            fd = os.open(self.path_of(key), os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise BlobMissing(f"no blob {key} in {self.root}") from None
        except OSError as exc:  # ELOOP: a symlink planted under our name
            raise BlobCorrupted(f"blob {key} in {self.root} is not a regular file ({exc.strerror})") from None
        with os.fdopen(fd, "rb") as src:
            size = os.fstat(src.fileno()).st_size
            if size > limit:
                raise BlobCorrupted(f"blob {key} is {size} bytes, more than its handle's payload seals to")
            return src.read()

    async def _delete(self, key: str) -> None:
        await asyncio.to_thread(self.path_of(key).unlink, missing_ok=True)

    async def _delete_prefix(self, prefix: str) -> int:
        def remove() -> int:
            folder = self.path_of(prefix.rstrip("/"))
            count = len(self._walk(prefix))
            shutil.rmtree(folder, ignore_errors=True)
            return count

        return await asyncio.to_thread(remove)

    async def _list(self, prefix: str) -> list[tuple[str, int]]:
        return await asyncio.to_thread(lambda: list(self._walk(prefix)))

    def _walk(self, prefix: str) -> list[tuple[str, int]]:
        # A prefix is `<tenant>/` or `<tenant>/<scope>/`: at most two folder levels down to the objects.
        base = self.path_of(prefix.rstrip("/"))
        found: list[tuple[str, int]] = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if is_digest(name):
                    path = Path(dirpath) / name
                    with contextlib.suppress(FileNotFoundError):  # deleted while listed
                        found.append((path.relative_to(self.root).as_posix(), path.lstat().st_size))
        return found
