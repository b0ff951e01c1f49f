"""Master keys: the key-encryption keys that wrap each secret's data key.

Signing keys live apart, in `signing_keys` (their own roots file and per-process bundles): the
processes that sign or verify never need the keys that decrypt, nor the other way round.

`KeyProvider` is the seam for a KMS: the broker only ever asks it to wrap and unwrap 32-byte data
keys, so a cloud KMS can replace `LocalKeyProvider` without touching sealed data's format.
`LocalKeyProvider` keeps its keys in one JSON file readable by its owner only (mode 0600).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agentstream.config import Settings
from agentstream.credentials.errors import CredentialError, DecryptionFailed, KeyUnavailable
from agentstream.credentials.signing_keys import check_private, decode_key, encode_key

log = logging.getLogger("agentstream.credentials")

_FORMAT = 1
_KEY_BYTES = 32  # AES-256
_NONCE_BYTES = 12  # the AES-GCM standard nonce; random is safe far beyond any key's wrap count


class KeyProvider(Protocol):
    @property
    def key_id(self) -> str:
        """The master key new data keys are wrapped with."""
        ...

    def wrap(self, data_key: bytes) -> tuple[str, bytes]:
        """Encrypts a data key under the current master key: `(key_id, wrapped)`."""
        ...

    def unwrap(self, key_id: str, wrapped: bytes) -> bytes:
        """The data key; `KeyUnavailable` for an unknown key id, `DecryptionFailed` if tampered."""
        ...


def _new_key_id() -> str:
    return f"mk-{secrets.token_hex(8)}"


class LocalKeyProvider:
    """Master keys in a local file, created on first use.

    Rotation adds a key and makes it current; old keys stay so that everything they wrapped still
    opens (a wrapped key must open for as long as its secret exists, so these keys never retire).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._current = ""
        self._keys: dict[str, bytes] = {}
        self._created: dict[str, int] = {}
        if not path.exists():
            self._create()
        self._load()

    @property
    def key_id(self) -> str:
        return self._current

    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    def wrap(self, data_key: bytes) -> tuple[str, bytes]:
        key_id = self._current
        nonce = secrets.token_bytes(_NONCE_BYTES)
        # The key id as AAD ties a wrapped key to the master key that claims it: relabelling a
        # wrapped key with another id fails to authenticate rather than decrypting to garbage.
        return key_id, nonce + AESGCM(self._keys[key_id]).encrypt(nonce, data_key, key_id.encode())

    def unwrap(self, key_id: str, wrapped: bytes) -> bytes:
        if key_id not in self._keys:
            # Another process (the admin CLI) may have rotated since this one loaded the file.
            self._load()
        master = self._keys.get(key_id)
        if master is None:
            raise KeyUnavailable(f"master key {key_id!r} is not in {self.path}")
        try:
            return AESGCM(master).decrypt(wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:], key_id.encode())
        except InvalidTag as exc:
            raise DecryptionFailed(f"a data key wrapped under master key {key_id} did not authenticate") from exc

    def rotate(self) -> str:
        """Makes a fresh key current and returns its id; every older key still unwraps."""
        with self._locked():
            self._load()
            key_id = _new_key_id()
            self._keys[key_id] = secrets.token_bytes(_KEY_BYTES)
            self._created[key_id] = int(time.time() * 1000)
            self._current = key_id
            self._write(replace=True)
        return key_id

    def _create(self) -> None:
        key_id = _new_key_id()
        self._keys = {key_id: secrets.token_bytes(_KEY_BYTES)}
        self._created = {key_id: int(time.time() * 1000)}
        self._current = key_id
        self._write(replace=False)

    def _document(self) -> bytes:
        return orjson.dumps(
            {
                "format": _FORMAT,
                "current": self._current,
                "keys": {
                    k: {"key": encode_key(v), "created_ms": self._created.get(k, 0)} for k, v in self._keys.items()
                },
            },
            option=orjson.OPT_INDENT_2,
        )

    def _write(self, *, replace: bool) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkstemp creates the file 0600, so the keys are never readable by others, not even briefly.
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".master-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(self._document())
                out.flush()
                os.fsync(out.fileno())
            if replace:
                os.replace(tmp, self.path)
            else:
                # link() fails if the file exists: two processes creating it at once both end up
                # using whichever complete file won, never a half-written one.
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _load(self) -> None:
        check_private(self.path)  # refuses to run on keys others can read
        try:
            doc = orjson.loads(self.path.read_bytes())
            keys = {str(k): decode_key(v["key"], f"key {k} in {self.path}") for k, v in doc["keys"].items()}
            created = {str(k): int(v.get("created_ms", 0)) for k, v in doc["keys"].items()}
            current = str(doc["current"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CredentialError(f"master key file {self.path} is malformed ({type(exc).__name__})") from exc
        if doc.get("format") != _FORMAT or current not in keys:
            raise CredentialError(f"master key file {self.path} has an unknown format or no current key")
        # A file from before the split may still hold a "signing" entry: it is ignored (signing keys
        # come from keys/signing.json now) and dropped at the next rotation.
        self._keys, self._created, self._current = keys, created, current

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # Serialises rotations across processes: two racing rotations must not drop each other's key.
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def local_key_provider(settings: Settings) -> LocalKeyProvider:
    """The deployment's master keys: `<AGENTSTREAM_HOME>/keys/master.json`."""
    return LocalKeyProvider(settings.home / "keys" / "master.json")
