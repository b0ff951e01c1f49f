"""Blobs at rest: envelope-encrypted with the platform's master keys, bound to their handle.

The scheme of agentstream.credentials.envelope applied to objects: a fresh 32-byte data key per
object, wrapped by the deployment's `KeyProvider` (the key-encryption key; a KMS can replace it),
AES-256-GCM over the payload. The associated data is the handle's identity (tenant, scope, sha256,
size) plus the object's whole header, so bytes copied under another tenant's or scope's key, or a
header edited in place, fail to authenticate instead of decrypting.

One stored object: `ASB\\x01`, u16 key id length, key id, u16 wrapped key length, wrapped key,
u8 kind length, kind, 12-byte nonce, then ciphertext and its 16-byte tag. The header is written
in the clear: it holds nothing secret (the data key inside it is wrapped).
"""

from __future__ import annotations

import hashlib
import secrets
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agentstream.blobs.errors import BlobCorrupted
from agentstream.blobs.handle import BlobHandle, check_kind
from agentstream.credentials.errors import CredentialError
from agentstream.credentials.keys import KeyProvider

MAGIC = b"ASB\x01"
_AAD_CONTEXT = b"agentstream.blob.v1"
_DATA_KEY_BYTES = 32
_NONCE_BYTES = 12
TAG_BYTES = 16
# Key ids and wrapped keys are short (tens of bytes); anything near these bounds is not ours.
_MAX_FIELD = 1024
MAX_HEADER_BYTES = len(MAGIC) + 2 + _MAX_FIELD + 2 + _MAX_FIELD + 1 + 255 + _NONCE_BYTES


def blob_aad(handle: BlobHandle, header: bytes | memoryview) -> bytes:
    # Length-prefixed (as envelope.secret_aad), so no choice of ids produces another handle's bytes.
    parts = [_AAD_CONTEXT, handle.tenant_id.encode(), handle.scope.encode(), handle.sha256.encode(),
             str(handle.size).encode(), bytes(header)]  # fmt: skip
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def max_stored_bytes(size: int) -> int:
    """The most bytes a sealed object of a `size`-byte payload can take: a larger object is not one."""
    return size + TAG_BYTES + MAX_HEADER_BYTES


def digest(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def seal_blob(provider: KeyProvider, handle: BlobHandle, kind: str, data: bytes | memoryview) -> bytearray:
    """The stored object for `data`, built in one buffer (a 50 MB payload costs one more 50 MB, not two)."""
    data_key = secrets.token_bytes(_DATA_KEY_BYTES)
    nonce = secrets.token_bytes(_NONCE_BYTES)
    key_id, wrapped = provider.wrap(data_key)
    key_id_bytes, kind_bytes = key_id.encode(), check_kind(kind).encode()
    header = b"".join([MAGIC, struct.pack(">H", len(key_id_bytes)), key_id_bytes, struct.pack(">H", len(wrapped)),
                       wrapped, struct.pack(">B", len(kind_bytes)), kind_bytes, nonce])  # fmt: skip
    out = bytearray(len(header) + len(data) + TAG_BYTES)
    out[: len(header)] = header
    AESGCM(data_key).encrypt_into(nonce, data, blob_aad(handle, header), memoryview(out)[len(header) :])
    return out


class _Reader:
    def __init__(self, stored: memoryview, handle: BlobHandle) -> None:
        self.stored, self.handle, self.at = stored, handle, 0

    def take(self, n: int) -> memoryview:
        if n > _MAX_FIELD or self.at + n > len(self.stored):
            raise BlobCorrupted(f"blob {self.handle.key} has a malformed header (truncated or not a sealed blob)")
        part = self.stored[self.at : self.at + n]
        self.at += n
        return part

    def sized(self, fmt: str) -> memoryview:
        (n,) = struct.unpack(fmt, self.take(struct.calcsize(fmt)))
        return self.take(int(n))


def open_blob(provider: KeyProvider, handle: BlobHandle, stored: bytes | bytearray | memoryview) -> tuple[str, bytes]:
    """`(kind, plaintext)` of a stored object, checked against `handle`: `BlobCorrupted` when the
    header, the authentication tag, the size or the sha256 differ from what was sealed."""
    view = memoryview(stored)
    if len(view) > max_stored_bytes(handle.size):
        raise BlobCorrupted(f"blob {handle.key} is {len(view)} bytes, more than a {handle.size}-byte payload seals to")
    reader = _Reader(view, handle)
    if reader.take(len(MAGIC)) != MAGIC:
        raise BlobCorrupted(f"blob {handle.key} is not a sealed blob (bad magic)")
    key_id = bytes(reader.sized(">H")).decode(errors="replace")
    wrapped = bytes(reader.sized(">H"))
    kind = bytes(reader.sized(">B")).decode(errors="replace")
    nonce = bytes(reader.take(_NONCE_BYTES))
    header = view[: reader.at]
    try:
        data_key = provider.unwrap(key_id, wrapped)
    except CredentialError as exc:  # KeyUnavailable, DecryptionFailed
        raise BlobCorrupted(f"blob {handle.key}: its data key does not open ({exc})") from exc
    try:
        plaintext = AESGCM(data_key).decrypt(nonce, view[reader.at :], blob_aad(handle, header))
    except (InvalidTag, ValueError) as exc:
        raise BlobCorrupted(
            f"blob {handle.key} did not authenticate: tampered with, truncated, or moved from another tenant or run"
        ) from exc
    # AES-GCM already vouches for these; checking again costs one hash and guards the handle's promise.
    if len(plaintext) != handle.size or digest(plaintext) != handle.sha256:
        raise BlobCorrupted(f"blob {handle.key} does not match its handle's size or sha256")
    return kind, plaintext
