"""API keys: `as_<key_id>_<secret>`, with a public 12-hex-char key id and a 32-byte random secret.

Only `hash_secret(key)` is ever stored. The key id is not secret: it names the key in listings, in
revocation and in logs, and lets the directory find the one stored hash to compare against.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

PREFIX = "as_"
_KEY_ID_BYTES = 6  # 12 hex chars: enough to never collide among one deployment's keys
_SECRET_BYTES = 32
# token_urlsafe(32) is 43 chars of the base64url alphabet, unpadded; the secret may contain "_",
# so the format is matched whole rather than split on underscores.
_KEY = re.compile(r"as_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_KEY_ID = re.compile(r"[0-9a-f]{12}")
MAX_KEY_LENGTH = 3 + 12 + 1 + 43


def generate_key() -> tuple[str, str]:
    """A fresh key: `(key_id, plaintext)`. The plaintext is shown to its owner once, then only hashed."""
    key_id = secrets.token_hex(_KEY_ID_BYTES)
    return key_id, f"{PREFIX}{key_id}_{secrets.token_urlsafe(_SECRET_BYTES)}"


def hash_secret(plaintext: str) -> str:
    # A plain SHA-256, not a password hash (bcrypt, scrypt, argon2): those are slow to make guessing
    # low-entropy passwords expensive. A key carries 256 random bits, which no amount of guessing
    # recovers from its hash, and a slow hash would cost CPU on every authenticated request.
    return hashlib.sha256(plaintext.encode()).hexdigest()


def parse_key(text: str) -> str | None:
    """The key id of a well-formed key, else None. Never raises."""
    if not isinstance(text, str) or len(text) != MAX_KEY_LENGTH:
        return None
    match = _KEY.fullmatch(text)
    return match.group(1) if match else None


def is_key_id(text: str) -> bool:
    return isinstance(text, str) and _KEY_ID.fullmatch(text) is not None


def matches(plaintext: str, key_hash: str) -> bool:
    """Whether `plaintext` hashes to `key_hash`, in time independent of where they first differ."""
    return hmac.compare_digest(hash_secret(plaintext).encode(), key_hash.encode())
