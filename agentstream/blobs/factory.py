"""The deployment's blob store, as its settings choose it."""

from __future__ import annotations

from agentstream.blobs.errors import BlobStoreUnavailable
from agentstream.blobs.local import LocalBlobStore
from agentstream.blobs.s3 import S3BlobStore, S3Target
from agentstream.blobs.seaweed import LocalS3, LocalS3Error
from agentstream.blobs.store import BlobStore
from agentstream.config import Settings
from agentstream.credentials.keys import KeyProvider, local_key_provider
from agentstream.settings import BlobSettings, load


def local_s3(settings: Settings, blobs: BlobSettings) -> LocalS3:
    """This home's local SeaweedFS (`agentstream blobs start`)."""
    return LocalS3(settings.home / "seaweedfs", port=blobs.local_s3_port)


def s3_target(settings: Settings, blobs: BlobSettings) -> S3Target:
    if blobs.s3_endpoint is None:
        try:
            return local_s3(settings, blobs).target(blobs.s3_bucket, blobs.s3_region,
                                                    create_bucket=blobs.s3_create_bucket)  # fmt: skip
        except LocalS3Error as exc:
            raise BlobStoreUnavailable(str(exc)) from None
    return S3Target(
        bucket=blobs.s3_bucket, endpoint_url=blobs.s3_endpoint, region=blobs.s3_region,
        access_key_id=blobs.s3_access_key_id, secret_access_key=blobs.s3_secret_access_key,
        addressing_style=blobs.s3_addressing, create_bucket=blobs.s3_create_bucket,
    )  # fmt: skip


def open_blob_store(
    settings: Settings, blobs: BlobSettings | None = None, provider: KeyProvider | None = None
) -> BlobStore:
    """The local directory store, or the S3 one; sealed with the deployment's master keys."""
    blobs = blobs or load(BlobSettings)
    provider = provider or local_key_provider(settings)
    if blobs.backend == "local":
        return LocalBlobStore(blobs.resolved_dir(settings.home), provider, blobs.max_bytes)
    return S3BlobStore(s3_target(settings, blobs), provider, blobs.max_bytes)
