"""Envelope encryption: each secret under its own random data key, the data key under a master key.

A fresh data key per secret (and per version of it) means a master key only ever encrypts 32
random bytes, rotation never re-encrypts secrets, and a leaked data key exposes one value only.
The associated data binds the ciphertext to its tenant and secret name, so bytes copied into
another tenant's or another name's record fail to authenticate instead of decrypting.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agentstream.credentials.errors import DecryptionFailed
from agentstream.credentials.keys import KeyProvider

_DATA_KEY_BYTES = 32
_NONCE_BYTES = 12
_AAD_CONTEXT = b"agentstream.secret.v1"


@dataclass(frozen=True, slots=True)
class Sealed:
    """A secret at rest; every field is safe to store and to log (none of them is the value)."""

    key_id: str
    wrapped_key: bytes
    nonce: bytes
    ciphertext: bytes


def secret_aad(tenant_id: str, name: str) -> bytes:
    """The associated data for one tenant's secret.

    Length-prefixed rather than joined with a separator, so no choice of tenant id and name can
    produce another pair's bytes ("a/b" + "c" versus "a" + "b/c").
    """
    parts = [_AAD_CONTEXT, tenant_id.encode(), name.encode()]
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def seal(provider: KeyProvider, plaintext: bytes, aad: bytes) -> Sealed:
    data_key = secrets.token_bytes(_DATA_KEY_BYTES)
    nonce = secrets.token_bytes(_NONCE_BYTES)
    ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, aad)
    key_id, wrapped = provider.wrap(data_key)
    return Sealed(key_id=key_id, wrapped_key=wrapped, nonce=nonce, ciphertext=ciphertext)


def open_sealed(provider: KeyProvider, sealed: Sealed, aad: bytes) -> bytes:
    """The plaintext; `DecryptionFailed` when anything (bytes, tenant, name) differs from `seal`."""
    data_key = provider.unwrap(sealed.key_id, sealed.wrapped_key)
    try:
        return AESGCM(data_key).decrypt(sealed.nonce, sealed.ciphertext, aad)
    except (InvalidTag, ValueError) as exc:  # ValueError: a nonce of the wrong length
        raise DecryptionFailed(
            "a sealed secret did not authenticate: it was tampered with, or belongs to another tenant or name"
        ) from exc
