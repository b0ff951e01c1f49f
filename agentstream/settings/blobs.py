"""Settings of the blob store (agentstream/blobs): where large payloads go, their size cap, and
the S3 option (the local SeaweedFS, or any S3 in production)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from agentstream.settings.base import ComponentSettings, variable


class BlobSettings(ComponentSettings):
    COMPONENT = "blobs"

    backend: Literal["local", "s3"] = variable(
        "local", "AGENTSTREAM_BLOB_STORE",
        "where blobs are kept: `local` (a directory, no service) or `s3` (any S3 API: the endpoint below, "
        "else the local SeaweedFS of `agentstream blobs start`)",
    )  # fmt: skip
    blob_dir: Path | None = variable(
        None, "AGENTSTREAM_BLOB_DIR", "the local store's directory", shown_default="`<home>/blobs`"
    )
    max_bytes: int = variable(
        64 * 1024 * 1024, "AGENTSTREAM_BLOB_MAX_BYTES",
        "the largest payload one blob may hold (bytes); a larger one is refused with a clear error",
        ge=1, le=1024**3,
    )  # fmt: skip
    offload_bytes: int = variable(
        16 * 1024, "AGENTSTREAM_BLOB_OFFLOAD_BYTES",
        "a tool result larger than this (UTF-8 bytes) goes to the blob store and its event carries a handle and a "
        "short preview; the model still receives it whole (`0`: off, every result stays in the journal)",
        ge=0, le=1024**3,
    )  # fmt: skip
    s3_endpoint: str | None = variable(
        None, "AGENTSTREAM_BLOB_S3_ENDPOINT", "the S3 API's URL (`https://s3.eu-west-1.amazonaws.com`, a MinIO, ...)",
        shown_default="unset: the local SeaweedFS (`agentstream blobs start`)",
    )  # fmt: skip
    s3_bucket: str = variable(
        "agentstream-blobs", "AGENTSTREAM_BLOB_S3_BUCKET", "the bucket blobs go in",
        pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
    )  # fmt: skip
    s3_region: str = variable("us-east-1", "AGENTSTREAM_BLOB_S3_REGION", "the bucket's region")
    s3_access_key_id: str | None = variable(
        None, "AGENTSTREAM_BLOB_S3_ACCESS_KEY_ID",
        "with the secret below: the S3 credentials (unset: boto3's own chain, e.g. an instance role)",
    )  # fmt: skip
    s3_secret_access_key: str | None = variable(
        None, "AGENTSTREAM_BLOB_S3_SECRET_ACCESS_KEY", "the S3 secret key; never logged", repr=False
    )
    s3_addressing: Literal["path", "virtual", "auto"] = variable(
        "path", "AGENTSTREAM_BLOB_S3_ADDRESSING", "S3 addressing style (SeaweedFS and MinIO need `path`)"
    )
    s3_create_bucket: bool = variable(
        True, "AGENTSTREAM_BLOB_S3_CREATE_BUCKET", "create the bucket on first use when it does not exist"
    )
    local_s3_port: int = variable(
        18333, "AGENTSTREAM_BLOB_LOCAL_S3_PORT",
        "the local SeaweedFS's S3 port (loopback only; its other ports are picked free)", ge=1, le=65535,
    )  # fmt: skip

    def resolved_dir(self, home: Path) -> Path:
        return (self.blob_dir or home / "blobs").resolve()
