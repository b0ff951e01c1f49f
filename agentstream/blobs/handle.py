"""Blob handles: what an event carries in place of a large payload.

The string form `blob:v1/<tenant>/<scope>/<sha256>/<size>` fits an Avro string field and is
parsed strictly: every component has a closed alphabet (no '/', no '.', nothing a path or an S3
key could interpret), the digest is exactly 64 lowercase hex characters, the size a plain decimal,
and the whole string is length-capped before any pattern runs. A store derives its object key and
file path only from a parsed handle, never from caller text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agentstream.blobs.errors import BlobHandleInvalid

SCHEME = "blob:v1"
# The tenant alphabet of agentstream.tenancy (2 to 63 of a-z, 0-9, '-'), so every real tenant fits.
TENANT_PATTERN = r"[a-z0-9][a-z0-9-]{1,62}"
# A run id (`run_<hex>`) or a named scope ("memory"): no dots, so never "." or "..".
SCOPE_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_-]{0,127}"
SHA256_PATTERN = r"[0-9a-f]{64}"
KIND_PATTERN = r"[a-z][a-z0-9_]{0,31}"
_MAX_SIZE_DIGITS = 15  # far above any cap; bounds int() on hostile input
MAX_HANDLE_CHARS = len(SCHEME) + 64 + 129 + 65 + _MAX_SIZE_DIGITS + 4

_TENANT = re.compile(TENANT_PATTERN)
_SCOPE = re.compile(SCOPE_PATTERN)
_SHA256 = re.compile(SHA256_PATTERN)
_KIND = re.compile(KIND_PATTERN)
_HANDLE = re.compile(
    rf"blob:v1/(?P<tenant>{TENANT_PATTERN})/(?P<scope>{SCOPE_PATTERN})/(?P<sha>{SHA256_PATTERN})"
    rf"/(?P<size>0|[1-9][0-9]{{0,{_MAX_SIZE_DIGITS - 1}}})"
)


def _shown(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:80] + "...")


def check_tenant(tenant_id: str) -> str:
    if not isinstance(tenant_id, str) or not _TENANT.fullmatch(tenant_id):
        raise BlobHandleInvalid(f"invalid tenant id {_shown(str(tenant_id))} for a blob")
    return tenant_id


def check_scope(scope: str) -> str:
    if not isinstance(scope, str) or not _SCOPE.fullmatch(scope):
        raise BlobHandleInvalid(
            f"invalid blob scope {_shown(str(scope))}: 1 to 128 of A-Z, a-z, 0-9, '_' and '-' (a run id or a name)"
        )
    return scope


def check_kind(kind: str) -> str:
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise BlobHandleInvalid(f"invalid blob kind {_shown(str(kind))}: 1 to 32 of a-z, 0-9 and '_'")
    return kind


@dataclass(frozen=True, slots=True)
class BlobHandle:
    """One stored payload: its tenant, its scope (the run it belongs to, whose retention deletes
    it), the sha256 of its plaintext (its address and its integrity check) and its size in bytes."""

    tenant_id: str
    scope: str
    sha256: str
    size: int

    def __post_init__(self) -> None:
        check_tenant(self.tenant_id)
        check_scope(self.scope)
        if not isinstance(self.sha256, str) or not _SHA256.fullmatch(self.sha256):
            raise BlobHandleInvalid(f"invalid blob digest {_shown(str(self.sha256))}: 64 lowercase hex characters")
        if type(self.size) is not int or not 0 <= self.size < 10**_MAX_SIZE_DIGITS:
            raise BlobHandleInvalid(f"invalid blob size {self.size!r}")

    @property
    def key(self) -> str:
        """The object key: one prefix per tenant and per scope, so a run's blobs go in one delete."""
        return f"{self.tenant_id}/{self.scope}/{self.sha256}"

    def __str__(self) -> str:
        return f"{SCHEME}/{self.key}/{self.size}"

    @classmethod
    def parse(cls, text: str) -> BlobHandle:
        """The handle `str(handle)` wrote; `BlobHandleInvalid` for anything else."""
        if not isinstance(text, str):
            raise BlobHandleInvalid(f"a blob handle is a string, not {type(text).__name__}")
        if len(text) > MAX_HANDLE_CHARS:
            raise BlobHandleInvalid(f"a blob handle of {len(text)} characters (at most {MAX_HANDLE_CHARS})")
        match = _HANDLE.fullmatch(text)
        if match is None:
            raise BlobHandleInvalid(
                f"not a blob handle: {_shown(text)} (expected {SCHEME}/<tenant>/<scope>/<sha256>/<size>)"
            )
        return cls(match["tenant"], match["scope"], match["sha"], int(match["size"]))


def scope_prefix(tenant_id: str, scope: str | None) -> str:
    """The key prefix of one tenant's blobs, or of one scope's; always ends with '/', so tenant
    `ab` never matches tenant `abc`'s keys."""
    check_tenant(tenant_id)
    return f"{tenant_id}/" if scope is None else f"{tenant_id}/{check_scope(scope)}/"


def is_digest(name: str) -> bool:
    return _SHA256.fullmatch(name) is not None
