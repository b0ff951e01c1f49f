"""Typed blob store errors.

Every message may be logged and shown: it names a tenant, a scope or a digest, never blob content
or a key. The next slice turns each into an error event ("a missing or corrupted blob is a clear
error, never a silent empty string"), so each failure has its own type.
"""

from __future__ import annotations


class BlobError(Exception):
    """Base of every blob store refusal or failure."""


class BlobHandleInvalid(BlobError):
    """A handle string, tenant id, scope or kind that does not have the exact expected shape."""


class BlobAccessDenied(BlobError):
    """A handle of one tenant presented by another: refused before anything is read."""


class BlobMissing(BlobError):
    """No object under the handle's key (deleted with its run, or never written)."""


class BlobCorrupted(BlobError):
    """An object that exists but fails authentication, its hash or its size: tampered, truncated,
    moved from another key, or sealed under a master key this deployment no longer holds."""


class BlobTooLarge(BlobError):
    """A payload (or a handle claiming one) over the store's size cap."""


class BlobStoreUnavailable(BlobError):
    """The backing store cannot be reached or refuses the platform's credentials."""
