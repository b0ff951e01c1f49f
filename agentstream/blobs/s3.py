"""The blob store over any S3 API (AWS S3, or the local SeaweedFS of `seaweed.py`), with boto3.

boto3 is synchronous: every call runs in a worker thread (one client, which boto3 documents as
thread-safe), never on the event loop. The bucket is checked once per store and created when
missing if the settings allow it. What comes back from S3 is only trusted after `open_blob`
verified it: a replaced or truncated object is `BlobCorrupted`, an absent one `BlobMissing`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

from agentstream.blobs.errors import BlobCorrupted, BlobMissing, BlobStoreUnavailable
from agentstream.blobs.store import DEFAULT_MAX_BYTES, SealedStore
from agentstream.credentials.keys import KeyProvider

_MISSING = {"NoSuchKey", "404", "NotFound"}
_NO_BUCKET = {"NoSuchBucket"}
_DELETE_BATCH = 1000  # DeleteObjects' limit


@dataclass(frozen=True)
class S3Target:
    """Where the objects go. Credentials None: boto3's own chain (AWS_* variables, an instance role)."""

    bucket: str
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    addressing_style: str = "path"
    create_bucket: bool = True


def s3_client(target: S3Target, *, probe: bool = False) -> Any:
    """A boto3 S3 client for `target`; `probe`: one quick attempt (a readiness check), no retries."""
    config = Config(
        s3={"addressing_style": target.addressing_style},
        retries={"max_attempts": 1 if probe else 3, "mode": "standard"},
        connect_timeout=1 if probe else 5,
        read_timeout=2 if probe else 60,
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=target.endpoint_url, region_name=target.region, aws_access_key_id=target.access_key_id,
        aws_secret_access_key=target.secret_access_key, config=config,
    )  # fmt: skip


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def ensure_bucket(client: Any, target: S3Target, where: str) -> None:
    """The target's bucket, created when missing and allowed (BlobStoreUnavailable when not)."""
    try:
        client.head_bucket(Bucket=target.bucket)
        return
    except ClientError as exc:
        if _code(exc) not in {"404", "NoSuchBucket", "NotFound"}:
            raise
        if not target.create_bucket:
            raise BlobStoreUnavailable(
                f"bucket {target.bucket} does not exist at {where} and creating it is off "
                "(AGENTSTREAM_BLOB_S3_CREATE_BUCKET)"
            ) from None
    kwargs: dict[str, Any] = {"Bucket": target.bucket}
    if target.region != "us-east-1":  # us-east-1 rejects an explicit location constraint
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": target.region}
    try:
        client.create_bucket(**kwargs)
    except ClientError as exc:
        if _code(exc) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
            raise


class S3BlobStore(SealedStore):
    def __init__(self, target: S3Target, provider: KeyProvider, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        super().__init__(provider, max_bytes)
        self.target = target
        self._client: Any = None
        self._ready = asyncio.Lock()

    @property
    def where(self) -> str:
        return f"s3://{self.target.bucket} at {self.target.endpoint_url or 'the AWS default endpoint'}"

    def _new_client(self) -> Any:
        return s3_client(self.target)

    async def client(self) -> Any:
        """The boto3 client, once the bucket is known to exist (created here if allowed)."""
        async with self._ready:
            if self._client is None:
                client = await asyncio.to_thread(self._new_client)
                await self._call(self._ensure_bucket, client)
                self._client = client
        return self._client

    def _ensure_bucket(self, client: Any) -> None:
        ensure_bucket(client, self.target, self.where)

    async def _call(self, fn: Any, *args: Any, key: str = "", **kwargs: Any) -> Any:
        """`fn` in a worker thread, its transport and auth failures as `BlobStoreUnavailable`."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except ClientError as exc:
            code = _code(exc)
            if code in _MISSING:
                raise BlobMissing(f"no blob {key or kwargs.get('Key', '')} in {self.where}") from None
            raise BlobStoreUnavailable(f"{self.where} refused the request: {code or exc}") from None
        except BotoCoreError as exc:
            raise BlobStoreUnavailable(f"{self.where} cannot be reached: {exc}") from None

    async def _write(self, key: str, sealed: bytearray) -> None:
        client = await self.client()
        # One PUT is atomic in S3: readers see the old object or the new one, never a mix.
        await self._call(client.put_object, Bucket=self.target.bucket, Key=key, Body=sealed,
                         ContentType="application/octet-stream")  # fmt: skip

    async def _read(self, key: str, limit: int) -> bytes:
        client = await self.client()

        def fetch() -> bytes:
            resp = client.get_object(Bucket=self.target.bucket, Key=key)
            body = resp["Body"]
            try:
                if int(resp.get("ContentLength", 0)) > limit:
                    raise BlobCorrupted(f"blob {key} is {resp['ContentLength']} bytes, more than its handle allows")
                return bytes(body.read())
            finally:
                body.close()

        result: bytes = await self._call(fetch, key=key)
        return result

    async def _delete(self, key: str) -> None:
        client = await self.client()
        await self._call(client.delete_object, Bucket=self.target.bucket, Key=key)

    async def _delete_prefix(self, prefix: str) -> int:
        client = await self.client()
        keys = [key for key, _ in await self._list(prefix)]

        def delete_all() -> int:
            for i in range(0, len(keys), _DELETE_BATCH):
                batch = [{"Key": k} for k in keys[i : i + _DELETE_BATCH]]
                resp = client.delete_objects(Bucket=self.target.bucket, Delete={"Objects": batch, "Quiet": True})
                if resp.get("Errors"):
                    first = resp["Errors"][0]
                    raise BlobStoreUnavailable(
                        f"{self.where} did not delete {len(resp['Errors'])} blobs under {prefix} "
                        f"(first: {first.get('Key')}: {first.get('Code')})"
                    )
            return len(keys)

        deleted: int = await self._call(delete_all)
        return deleted

    async def _list(self, prefix: str) -> list[tuple[str, int]]:
        client = await self.client()

        def list_all() -> list[tuple[str, int]]:
            found: list[tuple[str, int]] = []
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.target.bucket, Prefix=prefix):
                found += [(str(o["Key"]), int(o["Size"])) for o in page.get("Contents", [])]
            return found

        listed: list[tuple[str, int]] = await self._call(list_all)
        return listed

    async def close(self) -> None:
        if self._client is not None:
            await asyncio.to_thread(self._client.close)
            self._client = None
