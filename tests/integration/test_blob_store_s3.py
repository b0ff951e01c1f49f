"""The blob store contract (tests/blobs_contract.py) on the S3 store against a real SeaweedFS
started by the session fixture, plus what only S3 can get wrong: anonymous or badly signed
requests, a missing bucket, the server's own lifecycle (`agentstream blobs start|status|stop`)."""

from __future__ import annotations

import asyncio
import os
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from agentstream.blobs import BlobStoreUnavailable
from agentstream.blobs.s3 import S3BlobStore
from agentstream.blobs.seaweed import LocalS3
from agentstream.credentials.keys import LocalKeyProvider
from agentstream.localkafka import free_port
from tests.blobs_contract import CAP, RUN, TENANT, BlobStoreContract


class BucketObjects:
    """The stored objects through boto3 directly, past the store."""

    def __init__(self, store: S3BlobStore) -> None:
        self.store = store

    async def _client(self) -> Any:
        return await self.store.client()

    async def read(self, key: str) -> bytes:
        client = await self._client()
        resp = await asyncio.to_thread(client.get_object, Bucket=self.store.target.bucket, Key=key)
        return bytes(await asyncio.to_thread(resp["Body"].read))

    async def write(self, key: str, data: bytes) -> None:
        client = await self._client()
        await asyncio.to_thread(client.put_object, Bucket=self.store.target.bucket, Key=key, Body=data)


@pytest.fixture
async def s3_store(seaweed_s3: LocalS3, tmp_path: Path) -> AsyncIterator[S3BlobStore]:
    # A bucket per test: the contract's listings and prefix deletes start from nothing.
    target = seaweed_s3.target(f"t-{uuid.uuid4().hex[:12]}")
    store = S3BlobStore(target, LocalKeyProvider(tmp_path / "keys" / "master.json"), CAP)
    try:
        yield store
    finally:
        await store.close()


class TestS3BlobStore(BlobStoreContract):
    @pytest.fixture
    def backend(self, s3_store: S3BlobStore) -> tuple[S3BlobStore, BucketObjects]:
        return s3_store, BucketObjects(s3_store)


async def test_anonymous_and_badly_signed_requests_are_refused(seaweed_s3: LocalS3, s3_store: S3BlobStore) -> None:
    handle = await s3_store.put(TENANT, b"private" * 100, scope=RUN, kind="tool_result")
    url = f"{seaweed_s3.endpoint()}/{s3_store.target.bucket}/{handle.key}"
    with pytest.raises(urllib.error.HTTPError) as refused:
        await asyncio.to_thread(urllib.request.urlopen, url, timeout=5)
    assert refused.value.code == 403
    forged = S3BlobStore(replace(s3_store.target, secret_access_key="not-the-secret"), s3_store._provider, CAP)
    with pytest.raises(BlobStoreUnavailable):
        await forged.get(TENANT, handle)
    await forged.close()


async def test_the_servers_internal_apis_refuse_unsigned_reads(seaweed_s3: LocalS3, s3_store: S3BlobStore) -> None:
    # Beside S3, SeaweedFS's filer serves every object over plain HTTP on loopback; its JWT keys
    # make it refuse requests the S3 gateway did not sign (and the objects are sealed regardless).
    handle = await s3_store.put(TENANT, b"private" * 100, scope=RUN, kind="tool_result")
    filer = f"http://127.0.0.1:{seaweed_s3.internal_ports()['filer']}"
    for path in (f"/buckets/{s3_store.target.bucket}/{handle.key}", "/buckets/", "/"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            await asyncio.to_thread(urllib.request.urlopen, filer + path, timeout=5)
        assert refused.value.code == 401, path


async def test_a_missing_bucket_is_created_only_when_allowed(seaweed_s3: LocalS3, tmp_path: Path) -> None:
    provider = LocalKeyProvider(tmp_path / "master.json")
    target = seaweed_s3.target(f"t-{uuid.uuid4().hex[:12]}", create_bucket=False)
    refusing = S3BlobStore(target, provider, CAP)
    with pytest.raises(BlobStoreUnavailable, match="creating it is off"):
        await refusing.put(TENANT, b"x", scope=RUN, kind="tool_result")
    creating = S3BlobStore(replace(target, create_bucket=True), provider, CAP)
    handle = await creating.put(TENANT, b"x", scope=RUN, kind="tool_result")
    assert await creating.get(TENANT, handle) == b"x"
    for store in (refusing, creating):
        await store.close()


async def test_an_unreachable_server_is_unavailable(seaweed_s3: LocalS3, tmp_path: Path) -> None:
    target = replace(seaweed_s3.target("nowhere"), endpoint_url="http://127.0.0.1:9")  # discard port: refused
    store = S3BlobStore(target, LocalKeyProvider(tmp_path / "master.json"), CAP)
    with pytest.raises(BlobStoreUnavailable):
        await store.put(TENANT, b"x", scope=RUN, kind="tool_result")
    await store.close()


async def test_cli_starts_reports_and_stops_a_local_server(tmp_path: Path) -> None:
    env = {**os.environ, "AGENTSTREAM_HOME": str(tmp_path / "home"), "AGENTSTREAM_BLOB_LOCAL_S3_PORT": str(free_port())}

    async def blobs(action: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "agentstream"), "blobs", action, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await proc.communicate()
        assert proc.returncode == 0, out.decode()
        return out.decode()

    server = LocalS3(tmp_path / "home" / "seaweedfs")
    provider = LocalKeyProvider(tmp_path / "home" / "keys" / "master.json")
    try:
        assert "answering at http://127.0.0.1:" in await blobs("start")
        status = orjson.loads(await blobs("status"))
        assert status["local_s3"]["answers"] is True
        assert server.endpoint() == status["local_s3"]["endpoint"]
        assert (tmp_path / "home" / "seaweedfs" / "credentials.json").stat().st_mode & 0o777 == 0o600
        store = S3BlobStore(server.target("agentstream-blobs"), provider, CAP)
        handle = await store.put(TENANT, b"kept across restarts" * 100, scope=RUN, kind="tool_result")
        await store.close()
    finally:
        stopped = await blobs("stop")
    assert "stopped" in stopped
    assert orjson.loads(await blobs("status"))["local_s3"]["answers"] is False
    # Started again (its internal ports picked anew), it serves what it held.
    server.port = free_port()
    try:
        await server.start()
        assert await server.start() == 0.0  # already running: nothing started
        store = S3BlobStore(server.target("agentstream-blobs"), provider, CAP)
        assert await store.get(TENANT, handle) == b"kept across restarts" * 100
        await store.close()
    finally:
        assert await server.stop()
    assert not await server.stop()
