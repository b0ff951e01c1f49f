"""Delegations: short-lived signed grants that let one tool call fetch named tenant secrets.

The orchestrator issues a delegation for exactly one (tenant, run, call, tool) and a list of
secret names; the tool host exchanges it with the broker for plaintext values right before the
call. Tokens are `base64url(claims JSON) "." base64url(HMAC-SHA256)`: compact enough for a header,
verifiable without a round trip, and meaningless to anyone without the broker's signing key.
They are bearer tokens, so they are bound to their call, expire quickly and are usually single-use.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from agentstream.credentials.envelope import open_sealed, secret_aad
from agentstream.credentials.errors import (
    DelegationExpired,
    DelegationInvalid,
    DelegationReused,
    SecretNotGranted,
)
from agentstream.credentials.grants import granted as granted_to
from agentstream.credentials.keys import KeyProvider
from agentstream.credentials.signing_keys import Keyring, VersionedKey
from agentstream.credentials.store import StoredSecret
from agentstream.credentials.used import UsedTokens
from agentstream.registry.pins import ToolIdentity

# The keyring purpose of delegation keys (in every key bundle that issues or redeems delegations).
DELEGATION_KEY_PURPOSE = "delegation"
# Kept for callers that named the old purpose; a new claims format gets a new _VERSION.
DELEGATION_PURPOSE = DELEGATION_KEY_PURPOSE
MAX_TTL_S = 3600
MAX_TOKEN_LENGTH = 16 * 1024
# Issuer and broker clocks differ a little; beyond this a token "from the future" is refused.
CLOCK_SKEW_MS = 60_000
_VERSION = 1
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class Delegation:
    token_id: str
    tenant_id: str
    run_id: str
    call_id: str
    tool: str
    scopes: tuple[str, ...]
    secret_names: tuple[str, ...]
    issued_ms: int
    expires_ms: int
    single_use: bool
    # The identity of the tool it was issued for (`ToolIdentity.text`); "" in tokens that name the
    # tool by name only. When set, only that exact tool (owner, name, contract) may present it.
    identity: str = ""


class SecretSource(Protocol):
    """What the broker needs of a `SecretDirectory`: sealed secrets by tenant and name."""

    def get(self, tenant_id: str, name: str) -> StoredSecret | None: ...

    def refresh(self) -> None: ...


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64decode(segment: str) -> bytes:
    if not _SEGMENT.fullmatch(segment):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _sign(key: bytes, payload: str) -> bytes:
    return hmac.new(key, payload.encode(), hashlib.sha256).digest()


# A raw key (tests, one-key setups) acts as a keyring of one key with this id.
_RAW_KID = "k0"
DelegationKeys = bytes | Keyring


def _current(keys: DelegationKeys) -> VersionedKey:
    if isinstance(keys, Keyring):
        return keys.signing_key(DELEGATION_KEY_PURPOSE)
    if len(keys) < 32:
        raise ValueError("a delegation signing key must be at least 32 bytes")
    return VersionedKey(_RAW_KID, keys)


def _lookup(keys: DelegationKeys, kid: str) -> VersionedKey | None:
    if isinstance(keys, Keyring):
        return keys.lookup(DELEGATION_KEY_PURPOSE, kid)
    return VersionedKey(_RAW_KID, keys) if kid == _RAW_KID else None


def _signature_segment(kid: str, mac: bytes) -> str:
    # The key id travels inside the signature segment (length-prefixed), so a token stays
    # `payload.signature` and the key is found without parsing the unauthenticated payload.
    raw = kid.encode()
    return _b64encode(bytes([len(raw)]) + raw + mac)


class DelegationIssuer:
    def __init__(self, signing_key: DelegationKeys) -> None:
        _current(signing_key)  # refuses a short key now, not at the first issue
        self._key = signing_key

    def issue(
        self,
        tenant_id: str,
        run_id: str,
        call_id: str,
        tool: str,
        scopes: list[str],
        secret_names: list[str],
        now_ms: int,
        ttl_s: int = 300,
        single_use: bool = True,
        identity: str = "",
    ) -> str:
        if not all((tenant_id, run_id, call_id, tool)):
            raise ValueError("a delegation names its tenant, run, call and tool")
        if not secret_names:
            raise ValueError("a delegation names at least one secret")
        if not 1 <= ttl_s <= MAX_TTL_S:
            raise ValueError(f"ttl_s must be between 1 and {MAX_TTL_S}, not {ttl_s}")
        claims = {
            "v": _VERSION,
            "jti": secrets.token_urlsafe(16),
            "tid": tenant_id,
            "run": run_id,
            "call": call_id,
            "tool": tool,
            "scp": sorted(set(scopes)),
            "sec": sorted(set(secret_names)),
            "iat": now_ms,
            "exp": now_ms + ttl_s * 1000,
            "su": single_use,
        }
        if identity:
            claims["idn"] = identity
        payload = _b64encode(orjson.dumps(claims, option=orjson.OPT_SORT_KEYS))
        key = _current(self._key)
        return f"{payload}.{_signature_segment(key.kid, _sign(key.key, payload))}"


def _str_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("expected a list of strings")
    return tuple(value)


def verify(signing_key: DelegationKeys, token: str, now_ms: int | None = None) -> Delegation:
    """The claims of an authentic token, signed under a key not retired at `now_ms`; checks nothing
    else about time, binding or use."""
    invalid = DelegationInvalid("delegation token is malformed or its signature does not verify")
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1:
        raise invalid
    payload, _, signature = token.partition(".")
    try:
        raw = _b64decode(signature)
        kid = raw[1 : 1 + raw[0]].decode("ascii")
        given = raw[1 + raw[0] :]
    except (ValueError, binascii.Error, IndexError):
        raise invalid from None
    key = _lookup(signing_key, kid)
    if key is None or key.retired_at(int(time.time() * 1000) if now_ms is None else now_ms):
        raise invalid
    # Constant time, and before any parsing: nothing unauthenticated reaches the JSON parser.
    if not hmac.compare_digest(given, _sign(key.key, payload)):
        raise invalid
    try:
        claims = orjson.loads(_b64decode(payload))
        if claims["v"] != _VERSION:
            raise ValueError("unknown claims version")
        fields = (claims["jti"], claims["tid"], claims["run"], claims["call"], claims["tool"])
        times = (claims["iat"], claims["exp"])
        if not all(isinstance(f, str) for f in fields) or not all(type(t) is int for t in times):
            raise TypeError("bad claim types")
        identity = claims.get("idn", "")
        if not isinstance(claims["su"], bool) or not isinstance(identity, str):
            raise TypeError("bad claim types")
        return Delegation(*fields, _str_list(claims["scp"]), _str_list(claims["sec"]), *times, claims["su"], identity)
    except (ValueError, TypeError, KeyError, binascii.Error):
        # Signed by our key yet unreadable: an issuer bug, never user input; still just refused.
        raise invalid from None


class CredentialBroker:
    """Exchanges a delegation for the secret values it grants, checking every claim first."""

    def __init__(
        self, directory: SecretSource, provider: KeyProvider, signing_key: DelegationKeys, used: UsedTokens
    ) -> None:
        self._directory = directory
        self._provider = provider
        self._key = signing_key
        self._used = used

    async def exchange(
        self, token: str, *, tool: str, run_id: str, call_id: str, now_ms: int, identity: ToolIdentity | None = None
    ) -> dict[str, str]:
        """`{secret name: value}` for a valid delegation presented by the call it was issued for.

        `identity`: the exact tool about to run (owner, name, contract digest), which every secret
        must be granted to; None stands for the platform's tool `tool` with an unknown contract,
        which only grants by name (any version of a platform tool) match."""
        presented = identity if identity is not None else ToolIdentity("", tool, "")
        grant = verify(self._key, token, now_ms)
        if now_ms >= grant.expires_ms:
            raise DelegationExpired(f"delegation for tool {grant.tool} has expired")
        if grant.issued_ms > now_ms + CLOCK_SKEW_MS:
            raise DelegationInvalid(f"delegation for tool {grant.tool} is not valid yet (issuer clock ahead?)")
        # A leaked token is useless elsewhere: it only works for the very call it was issued to.
        if grant.tool != tool:
            raise DelegationInvalid(f"delegation was issued for tool {grant.tool}, presented by tool {tool}")
        if grant.run_id != run_id or grant.call_id != call_id:
            raise DelegationInvalid(f"delegation for tool {tool} was issued for another run or call")
        if presented.name != tool or (grant.identity and grant.identity != presented.text):
            raise DelegationInvalid(
                f"delegation was issued for tool {grant.identity or grant.tool}, presented by {presented.text}"
            )
        self._directory.refresh()
        granted: dict[str, StoredSecret] = {}
        for name in grant.secret_names:
            stored = self._directory.get(grant.tenant_id, name)
            if stored is None:
                raise SecretNotGranted(f"secret {name} does not exist for this tenant (requested by tool {tool})")
            if not granted_to(stored.info.tools, presented):
                # Granted by identity: a same-named tool of another owner or contract is not it.
                raise SecretNotGranted(f"secret {name} is not granted to tool {presented.text}")
            if not set(stored.info.scopes) <= set(grant.scopes):
                raise SecretNotGranted(f"delegation for tool {tool} lacks scopes that secret {name} requires")
            granted[name] = stored
        # Claimed only once every check passed, so a refused attempt does not burn a valid token;
        # claimed before decrypting, so two racing exchanges cannot both get the values.
        if grant.single_use and not self._used.claim(grant.token_id, grant.expires_ms):
            raise DelegationReused(f"single-use delegation for tool {tool} was already exchanged")
        return {
            name: open_sealed(self._provider, s.sealed, secret_aad(grant.tenant_id, name)).decode()
            for name, s in granted.items()
        }
