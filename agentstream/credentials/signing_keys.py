"""Signing keys, kept apart from the encryption keys and handed out per process.

`<home>/keys/signing.json` holds the signing roots (only the operator's tools read it). Every
signing key in use is derived from a root for one purpose (`capability`, `approval`, `delegation`,
`journal/<writer>`), and every signature names the root it was derived from (its key id), so
roots can rotate: a rotation makes a fresh root current and gives the older ones a retirement
time, after which their signatures are refused.

A process never reads the roots. It reads its own bundle, `<home>/keys/<component>.keys.json`,
holding only the derived keys its component needs (the table `NEEDS`): the internet-facing
gateway gets the approval key and its own journal key, nothing that mints a capability or a
delegation. Bundles are issued by whoever holds the roots (`ensure_key_bundles`, run by the
stack and the CLI before a process starts; in production, mount only the bundle).
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from agentstream.config import Settings
from agentstream.credentials.errors import CredentialError
from agentstream.processors.catalog import CORES

_FORMAT = 1
_KEY_BYTES = 32
_SALT = b"agentstream.signing.v2"
# A rotated-out root still verifies this long by default: long enough for every capability,
# delegation and pending approval signed under it to be used or expire.
DEFAULT_RETIRE_AFTER_S = 24 * 3600
# How often a process looks at its bundle file again (rotation, retirement) at most.
RELOAD_INTERVAL_S = 2.0

JOURNAL_WRITERS = ("gateway", "admin", *CORES)


def journal_purpose(writer: str) -> str:
    return f"journal/{writer}"


def _journal(*writers: str) -> frozenset[str]:
    return frozenset(journal_purpose(w) for w in writers)


# What each process holds. A writer's journal key both signs its records and lets a reader check
# them (HMAC), so every processor, which must check what it reads, holds every writer's journal
# key: the processors are one trust zone. The boundary is around them: the internet-facing gateway
# holds only its own journal key, the approval key and the run-request key (it creates runs), and
# a Kafka client or a tool holds none. The keys that mint side effects (capability, delegation) are
# held only by the policy gate and the tool executor; the run-request key, which proves that the
# gateway or an operator created a run for its tenant, only by the gateway and the orchestrator.
# Every component also holds the shared view key (see journal_trust.VIEW_PURPOSE): it lets the
# gateway tell platform records from a keyless client's, and proves nothing more.
_ALL_JOURNAL = _journal(*JOURNAL_WRITERS) | {"journal-view"}
NEEDS: dict[str, frozenset[str]] = {
    "gateway": frozenset({"approval", "run-request", journal_purpose("gateway"), "journal-view"}),
    "orchestrator": _ALL_JOURNAL | {"run-request"},
    "policy-gate": _ALL_JOURNAL | {"capability", "approval", "delegation"},
    "cost-governor": _ALL_JOURNAL,
    "model-invoker": _ALL_JOURNAL,
    "kv-dispatcher": _ALL_JOURNAL,
    "tool-executor": _ALL_JOURNAL | {"capability", "delegation"},
}


def encode_key(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def decode_key(value: Any, where: str) -> bytes:
    """A 32-byte key from its base64 text in a key file; CredentialError names `where` otherwise."""
    try:
        raw = base64.b64decode(str(value), validate=True)
    except ValueError as exc:
        raise CredentialError(f"{where} is not base64") from exc
    if len(raw) != _KEY_BYTES:
        raise CredentialError(f"{where} is {len(raw)} bytes, expected {_KEY_BYTES}")
    return raw


def check_private(path: Path) -> None:
    """Refuses a key file (or its directory) that others can read or write: keys on a shared
    machine are only as safe as their mode, and a warning in a log protects nothing."""
    for target, mask in ((path, 0o077), (path.parent, 0o077)):
        st = target.stat()
        if stat.S_IMODE(st.st_mode) & mask:
            raise CredentialError(
                f"{target} is accessible by others (mode {stat.S_IMODE(st.st_mode):o}); "
                f"run `chmod {'700' if target.is_dir() else '600'} {target}` and start again"
            )
        if st.st_uid != os.geteuid():
            raise CredentialError(f"{target} belongs to uid {st.st_uid}, not to this user ({os.geteuid()})")


def write_private(path: Path, document: bytes, *, replace: bool = True) -> None:
    """Writes a key file atomically, mode 0600 from its first byte."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(document)
            out.flush()
            os.fsync(out.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            # link() fails if the file exists: two processes creating it at once both end up using
            # whichever complete file won.
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@dataclass(frozen=True, slots=True)
class VersionedKey:
    kid: str
    key: bytes = b""
    retired_ms: int | None = None  # refused from this time on; None: not retired

    def retired_at(self, ts_ms: int) -> bool:
        return self.retired_ms is not None and ts_ms >= self.retired_ms


def derive(root: bytes, purpose: str) -> bytes:
    hkdf = HKDF(algorithm=SHA256(), length=_KEY_BYTES, salt=_SALT, info=purpose.encode())
    return hkdf.derive(root)


class Keyring:
    """Derived keys by purpose and key id, read from a file and re-read when it changes (so a
    rotation reaches running processes without a restart)."""

    def __init__(
        self,
        path: Path,
        keys: dict[str, dict[str, VersionedKey]],
        current: str,
        loader: Callable[[], Keyring] | None = None,
    ) -> None:
        self.path = path
        self._keys = keys
        self.current = current
        self._loader = loader or (lambda: load_keyring(path))
        self._checked = time.monotonic()
        self._mtime = path.stat().st_mtime_ns if path.exists() else 0

    @property
    def purposes(self) -> frozenset[str]:
        return frozenset(self._keys)

    def signing_key(self, purpose: str) -> VersionedKey:
        self._maybe_reload()
        found = self._keys.get(purpose, {}).get(self.current)
        if found is None:
            raise CredentialError(f"this process holds no {purpose!r} signing key ({self.path})")
        return found

    def lookup(self, purpose: str, kid: str) -> VersionedKey | None:
        self._maybe_reload(force=kid not in self._keys.get(purpose, {}))
        return self._keys.get(purpose, {}).get(kid)

    def _maybe_reload(self, force: bool = False) -> None:
        # An unknown key id (a rotation this process has not seen) costs one stat() of the file;
        # otherwise the file is looked at every few seconds, for retirements.
        now = time.monotonic()
        if not force and now - self._checked < RELOAD_INTERVAL_S:
            return
        self._checked = now
        with contextlib.suppress(OSError):
            mtime = self.path.stat().st_mtime_ns
            if mtime != self._mtime:
                fresh = self._loader()
                self._keys, self.current, self._mtime = fresh._keys, fresh.current, mtime


def _keyring_document(keys: dict[str, dict[str, VersionedKey]], current: str) -> bytes:
    body = {
        p: {k: {"key": encode_key(v.key), "retired_ms": v.retired_ms} for k, v in ks.items()} for p, ks in keys.items()
    }
    return orjson.dumps({"format": _FORMAT, "current": current, "keys": body}, option=orjson.OPT_INDENT_2)


def load_keyring(path: Path) -> Keyring:
    if not path.exists():
        raise CredentialError(f"key bundle {path} does not exist: issue it with the operator's tools first")
    check_private(path)
    try:
        doc = orjson.loads(path.read_bytes())
        keys = {
            str(p): {str(k): VersionedKey(str(k), decode_key(v["key"], f"{p}/{k} in {path}"), v.get("retired_ms"))
                     for k, v in ks.items()}
            for p, ks in doc["keys"].items()
        }  # fmt: skip
        current = str(doc["current"])
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise CredentialError(f"key bundle {path} is malformed ({type(exc).__name__})") from exc
    if doc.get("format") != _FORMAT:
        raise CredentialError(f"key bundle {path} has an unknown format")
    return Keyring(path, keys, current)


class SigningRoots:
    """The signing roots file; only the operator's tools (stack, CLI, admin) open it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            root = VersionedKey(_new_kid(), secrets.token_bytes(_KEY_BYTES))
            write_private(path, self._document({root.kid: root}, root.kid), replace=False)
        self.roots: dict[str, VersionedKey] = {}
        self.current = ""
        self._load()

    @staticmethod
    def _document(roots: dict[str, VersionedKey], current: str) -> bytes:
        body = {k: {"key": encode_key(v.key), "retired_ms": v.retired_ms} for k, v in roots.items()}
        return orjson.dumps({"format": _FORMAT, "current": current, "roots": body}, option=orjson.OPT_INDENT_2)

    def _load(self) -> None:
        check_private(self.path)
        try:
            doc = orjson.loads(self.path.read_bytes())
            roots = {str(k): VersionedKey(str(k), decode_key(v["key"], f"root {k} in {self.path}"), v.get("retired_ms"))
                     for k, v in doc["roots"].items()}  # fmt: skip
            current = str(doc["current"])
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise CredentialError(f"signing roots file {self.path} is malformed ({type(exc).__name__})") from exc
        if doc.get("format") != _FORMAT or current not in roots:
            raise CredentialError(f"signing roots file {self.path} has an unknown format or no current root")
        self.roots, self.current = roots, current

    def rotate(self, retire_after_s: float = DEFAULT_RETIRE_AFTER_S, now_ms: int | None = None) -> str:
        """Makes a fresh root current; every older root not yet retiring retires `retire_after_s`
        from now (verifies until then, refused after)."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        self._load()
        retire = now_ms + int(retire_after_s * 1000)
        roots = {k: v if v.retired_ms is not None else VersionedKey(k, v.key, retire) for k, v in self.roots.items()}
        fresh = VersionedKey(_new_kid(), secrets.token_bytes(_KEY_BYTES))
        roots[fresh.kid] = fresh
        write_private(self.path, self._document(roots, fresh.kid))
        self.roots, self.current = roots, fresh.kid
        return fresh.kid

    def keyring(self, purposes: frozenset[str] | None = None) -> Keyring:
        """Keys derived for the given purposes (every purpose any process may need when None)."""
        wanted = purposes if purposes is not None else frozenset().union(*NEEDS.values(), _journal(*JOURNAL_WRITERS))
        keys = {p: {k: VersionedKey(k, derive(v.key, p), v.retired_ms) for k, v in self.roots.items()} for p in wanted}
        return Keyring(self.path, keys, self.current, lambda: SigningRoots(self.path).keyring(purposes))

    def write_bundle(self, component: str, path: Path) -> None:
        ring = self.keyring(NEEDS[component])
        write_private(path, _keyring_document(ring._keys, ring.current))


def _new_kid() -> str:
    return f"sk-{secrets.token_hex(6)}"


def roots_path(settings: Settings) -> Path:
    return settings.home / "keys" / "signing.json"


def bundle_path(settings: Settings, component: str) -> Path:
    return settings.home / "keys" / f"{component}.keys.json"


def ensure_key_bundles_in(home: Path) -> None:
    """Issues (or re-issues, after a rotation) every component's bundle from the roots. Run by the
    operator's tools before processes start; creates the roots on a deployment's first start."""
    roots = SigningRoots(home / "keys" / "signing.json")
    for component in NEEDS:
        roots.write_bundle(component, home / "keys" / f"{component}.keys.json")


def ensure_key_bundles(settings: Settings) -> None:
    ensure_key_bundles_in(settings.home)


def issue_missing_bundle(settings: Settings, component: str) -> None:
    """A process started on the operator's machine without its bundle (by hand, or by a test) gets
    it issued first; a deployment that mounts only the bundle (no roots) never gets here."""
    if component != "admin" and not bundle_path(settings, component).exists():
        ensure_key_bundles(settings)


def rotate_signing_keys(settings: Settings, retire_after_s: float = DEFAULT_RETIRE_AFTER_S) -> str:
    kid = SigningRoots(roots_path(settings)).rotate(retire_after_s)
    ensure_key_bundles(settings)  # running processes pick their new bundle up within seconds
    return kid


def component_keyring(settings: Settings, component: str) -> Keyring:
    """The keys one process holds: its bundle for a platform component, every key for the
    operator's own tools ("admin": the CLI, tests and benches, which can read the roots)."""
    if component == "admin":
        return SigningRoots(roots_path(settings)).keyring()
    if component not in NEEDS:
        raise CredentialError(f"no key bundle is defined for component {component!r}")
    return load_keyring(bundle_path(settings, component))
