"""Blob storage: large payloads kept out of the journal, behind handles that events carry.

Per-tenant, encrypted at rest with the platform's envelope keys, verified by hash on read, grouped
by run so a run's retention deletes them in one go. See store.py for the layout and the rules,
sealing.py for the encryption, seaweed.py for the local S3 server.
"""

from agentstream.blobs.errors import (
    BlobAccessDenied,
    BlobCorrupted,
    BlobError,
    BlobHandleInvalid,
    BlobMissing,
    BlobStoreUnavailable,
    BlobTooLarge,
)
from agentstream.blobs.handle import BlobHandle
from agentstream.blobs.store import BlobEntry, BlobStore

__all__ = [
    "BlobAccessDenied",
    "BlobCorrupted",
    "BlobEntry",
    "BlobError",
    "BlobHandle",
    "BlobHandleInvalid",
    "BlobMissing",
    "BlobStore",
    "BlobStoreUnavailable",
    "BlobTooLarge",
]
