"""The blob store contract: one suite that every backend must pass, run against the local directory
store (tests/unit/test_blobs_contract_local.py) and the S3 store on a real SeaweedFS
(tests/integration/test_blob_store_s3.py). A backend's test class provides `backend`: its store (with
the cap `CAP`) and direct access to the stored objects (the files, or boto3), to tamper with."""

from __future__ import annotations

import hashlib
import os
from typing import Protocol

import pytest

from agentstream.blobs import (
    BlobAccessDenied,
    BlobCorrupted,
    BlobHandle,
    BlobHandleInvalid,
    BlobMissing,
    BlobStore,
    BlobTooLarge,
)

CAP = 60 * 1024 * 1024  # 50 MB fits, 60 MiB + 1 does not
TENANT, OTHER = "acme", "globex"
RUN, RUN2 = "run_0123456789abcdef0123", "run_fedcba9876543210fedc"


class RawObjects(Protocol):
    async def read(self, key: str) -> bytes: ...

    async def write(self, key: str, data: bytes) -> None: ...


class BlobStoreContract:
    """A backend's test class provides the fixture `backend`: its store and raw access to its objects."""

    @pytest.fixture
    def store(self, backend: tuple[BlobStore, RawObjects]) -> BlobStore:
        return backend[0]

    @pytest.fixture
    def raw(self, backend: tuple[BlobStore, RawObjects]) -> RawObjects:
        return backend[1]

    async def test_round_trip(self, store: BlobStore) -> None:
        for data in (b"", b"x", os.urandom(17_000), "héllo wörld".encode() * 3000):
            handle = await store.put(TENANT, data, scope=RUN, kind="tool_result")
            assert handle == BlobHandle(TENANT, RUN, hashlib.sha256(data).hexdigest(), len(data))
            assert BlobHandle.parse(str(handle)) == handle
            assert await store.get(TENANT, handle) == data

    async def test_put_is_idempotent(self, store: BlobStore) -> None:
        data = os.urandom(20_000)
        first = await store.put(TENANT, data, scope=RUN, kind="tool_result")
        again = await store.put(TENANT, data, scope=RUN, kind="prompt_part")
        assert first == again
        assert [e.sha256 for e in await store.list_blobs(TENANT, RUN)] == [first.sha256]
        assert await store.get(TENANT, first) == data

    async def test_another_tenants_handle_is_refused(self, store: BlobStore, raw: RawObjects) -> None:
        data = b"acme's private tool result " * 1000
        handle = await store.put(TENANT, data, scope=RUN, kind="tool_result")
        with pytest.raises(BlobAccessDenied):
            await store.get(OTHER, handle)
        with pytest.raises(BlobAccessDenied):
            await store.delete(OTHER, handle)
        assert await store.get(TENANT, handle) == data  # the refused delete deleted nothing
        assert await store.list_blobs(OTHER) == []
        assert [e.tenant_id for e in await store.list_blobs(TENANT)] == [TENANT]
        # The same digest under the other tenant's name: not there, and never acme's object.
        forged = BlobHandle(OTHER, RUN, handle.sha256, handle.size)
        with pytest.raises(BlobMissing):
            await store.get(OTHER, forged)
        # acme's sealed bytes copied under globex's key: they are bound to acme, so they do not open.
        await raw.write(forged.key, await raw.read(handle.key))
        with pytest.raises(BlobCorrupted):
            await store.get(OTHER, forged)

    async def test_tampered_object_is_corrupted(self, store: BlobStore, raw: RawObjects) -> None:
        data = os.urandom(40_000)
        handle = await store.put(TENANT, data, scope=RUN, kind="tool_result")
        original = await raw.read(handle.key)
        for i in (0, 10, 60, len(original) // 2, len(original) - 1):  # magic, header, ciphertext, tag
            flipped = bytearray(original)
            flipped[i] ^= 0x01
            await raw.write(handle.key, bytes(flipped))
            with pytest.raises(BlobCorrupted):
                await store.get(TENANT, handle)
        for broken in (original[:-1], original[: len(original) // 2], b"", original + b"\0" * 4096):
            await raw.write(handle.key, broken)
            with pytest.raises(BlobCorrupted):
                await store.get(TENANT, handle)
        await store.put(TENANT, data, scope=RUN, kind="tool_result")  # a put again repairs it
        assert await store.get(TENANT, handle) == data

    async def test_object_moved_to_another_digest_is_corrupted(self, store: BlobStore, raw: RawObjects) -> None:
        a = await store.put(TENANT, b"a" * 5000, scope=RUN, kind="tool_result")
        b = await store.put(TENANT, b"b" * 5000, scope=RUN, kind="tool_result")
        await raw.write(b.key, await raw.read(a.key))
        with pytest.raises(BlobCorrupted):
            await store.get(TENANT, b)
        moved = BlobHandle(TENANT, RUN2, a.sha256, a.size)  # another run's key, same bytes
        await raw.write(moved.key, await raw.read(a.key))
        with pytest.raises(BlobCorrupted):
            await store.get(TENANT, moved)

    async def test_missing_blob(self, store: BlobStore) -> None:
        never = BlobHandle(TENANT, RUN, "0" * 64, 10)
        with pytest.raises(BlobMissing):
            await store.get(TENANT, never)
        handle = await store.put(TENANT, b"short-lived", scope=RUN, kind="tool_result")
        await store.delete(TENANT, handle)
        with pytest.raises(BlobMissing):
            await store.get(TENANT, handle)
        await store.delete(TENANT, handle)  # deleting what is gone is not an error

    async def test_fifty_megabytes_round_trip(self, store: BlobStore, raw: RawObjects) -> None:
        data = os.urandom(50 * 1000 * 1000)
        handle = await store.put(TENANT, data, scope=RUN, kind="tool_result")
        assert handle.size == len(data)
        assert await store.get(TENANT, handle) == data
        stored = await raw.read(handle.key)
        assert len(data) < len(stored) < len(data) + 512  # the header and tag only

    async def test_over_the_cap(self, store: BlobStore) -> None:
        assert store.max_bytes == CAP
        with pytest.raises(BlobTooLarge):
            await store.put(TENANT, bytes(CAP + 1), scope=RUN, kind="tool_result")
        assert await store.list_blobs(TENANT) == []
        with pytest.raises(BlobTooLarge):  # a handle claiming more than the cap is not fetched
            await store.get(TENANT, BlobHandle(TENANT, RUN, "a" * 64, CAP + 1))

    async def test_hostile_names(self, store: BlobStore) -> None:
        for tenant in ("..", "../acme", "/etc", "ACME", "a", "acme/x", "acme\0", "x" * 100, ""):
            with pytest.raises(BlobHandleInvalid):
                await store.put(tenant, b"x", scope=RUN, kind="tool_result")
            with pytest.raises(BlobHandleInvalid):
                await store.list_blobs(tenant)
            with pytest.raises(BlobHandleInvalid):
                await store.delete_prefix(tenant)
        for scope in ("..", ".", "../run", "/abs", "run/../x", "run 1", "r" * 129, ""):
            with pytest.raises(BlobHandleInvalid):
                await store.put(TENANT, b"x", scope=scope, kind="tool_result")
            with pytest.raises(BlobHandleInvalid):
                await store.delete_prefix(TENANT, scope)
        for kind in ("", "Tool", "../k", "k" * 33):
            with pytest.raises(BlobHandleInvalid):
                await store.put(TENANT, b"x", scope=RUN, kind=kind)
        with pytest.raises(BlobHandleInvalid):
            await store.get(TENANT, BlobHandle.parse(f"blob:v1/{TENANT}/../{'0' * 64}/1"))

    async def test_run_prefix_deletion(self, store: BlobStore) -> None:
        run1 = [await store.put(TENANT, f"run one {i}".encode() * 500, scope=RUN, kind="tool_result") for i in range(3)]
        run2 = await store.put(TENANT, b"run two" * 500, scope=RUN2, kind="tool_result")
        theirs = await store.put(OTHER, b"run one 0" * 500, scope=RUN, kind="tool_result")
        assert await store.delete_prefix(TENANT, RUN) == 3
        for handle in run1:
            with pytest.raises(BlobMissing):
                await store.get(TENANT, handle)
        assert await store.get(TENANT, run2) == b"run two" * 500
        assert await store.get(OTHER, theirs) == b"run one 0" * 500  # same scope name, other tenant
        assert await store.delete_prefix(TENANT, RUN) == 0
        assert await store.delete_prefix(TENANT) == 1
        assert await store.list_blobs(TENANT) == []
        assert len(await store.list_blobs(OTHER)) == 1

    async def test_encrypted_at_rest(self, store: BlobStore, raw: RawObjects) -> None:
        data = b"the launch code is 0000; " * 2000
        handle = await store.put(TENANT, data, scope=RUN, kind="tool_result")
        stored = await raw.read(handle.key)
        assert b"launch code" not in stored
        assert data[:16] not in stored
        assert handle.sha256.encode() not in stored
