"""The blob store contract (tests/blobs_contract.py) on the local directory store, plus what only
a directory can get wrong: file modes, temp files, symlinks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agentstream.blobs import BlobCorrupted, BlobStoreUnavailable
from agentstream.blobs.local import LocalBlobStore
from agentstream.credentials.keys import LocalKeyProvider
from tests.blobs_contract import CAP, RUN, TENANT, BlobStoreContract


class FileObjects:
    def __init__(self, store: LocalBlobStore) -> None:
        self.store = store

    async def read(self, key: str) -> bytes:
        return self.store.path_of(key).read_bytes()

    async def write(self, key: str, data: bytes) -> None:
        path = self.store.path_of(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


@pytest.fixture
def local_store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "home" / "blobs", LocalKeyProvider(tmp_path / "keys" / "master.json"), CAP)


class TestLocalBlobStore(BlobStoreContract):
    @pytest.fixture
    def backend(self, local_store: LocalBlobStore) -> tuple[LocalBlobStore, FileObjects]:
        return local_store, FileObjects(local_store)


async def test_files_are_private_and_complete(local_store: LocalBlobStore) -> None:
    handle = await local_store.put(TENANT, b"x" * 1000, scope=RUN, kind="tool_result")
    path = local_store.path_of(handle.key)
    assert path == local_store.root / TENANT / RUN / handle.sha256
    assert path.stat().st_mode & 0o777 == 0o600
    assert (local_store.root / TENANT).stat().st_mode & 0o777 == 0o700
    assert [p.name for p in path.parent.iterdir()] == [handle.sha256]  # no temp file left behind


async def test_a_symlink_under_a_blob_name_is_not_followed(local_store: LocalBlobStore, tmp_path: Path) -> None:
    handle = await local_store.put(TENANT, b"mine" * 100, scope=RUN, kind="tool_result")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(local_store.path_of(handle.key).read_bytes())
    local_store.path_of(handle.key).unlink()
    os.symlink(elsewhere, local_store.path_of(handle.key))
    with pytest.raises(BlobCorrupted):
        await local_store.get(TENANT, handle)


async def test_listing_skips_what_is_not_a_blob(local_store: LocalBlobStore) -> None:
    handle = await local_store.put(TENANT, b"x", scope=RUN, kind="tool_result")
    (local_store.root / TENANT / RUN / ".put-half.tmp").write_bytes(b"partial")
    (local_store.root / TENANT / RUN / "notes.txt").write_bytes(b"?")
    assert [e.sha256 for e in await local_store.list_blobs(TENANT)] == [handle.sha256]


async def test_an_unwritable_directory_is_a_typed_error(local_store: LocalBlobStore) -> None:
    local_store.root.parent.mkdir(parents=True)
    local_store.root.write_bytes(b"a file where the folder should be")
    with pytest.raises(BlobStoreUnavailable, match="could not be written"):
        await local_store.put(TENANT, b"x", scope=RUN, kind="tool_result")
