"""The tenant directory: an in-memory projection of the `tenants` topic that authenticates callers.

The gateway keeps no state of its own here: `start()` rebuilds the directory from the compacted
topic, and `poll()` / `refresh()` / `run()` keep it current, so a revoked key or a disabled tenant
stops authenticating within one poll of the record reaching the broker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from confluent_kafka import KafkaException

from agentstream.config import Settings
from agentstream.events import ApiKeyIssued, ApiKeyRevoked, Event, TenantUpserted
from agentstream.kafka.table import TopicTable
from agentstream.tenancy.keys import MAX_KEY_LENGTH, matches, parse_key
from agentstream.tenancy.scopes import effective_scopes
from agentstream.topics import load_topics

TENANTS = "tenants"
_BEARER = "bearer"
# A fresh key's lookup waits this long at most for the tenants topic (then: 401, as before).
_FRESH_READ_TIMEOUT_S = 2.0
log = logging.getLogger(__name__)


def _presented_key(authorization_header: str | None) -> tuple[str, str] | None:
    """The plaintext key and its id of a well-formed `Bearer <key>` header; None for anything else."""
    if not isinstance(authorization_header, str) or len(authorization_header) > MAX_KEY_LENGTH + 64:
        return None
    scheme, _, credentials = authorization_header.strip().partition(" ")
    if scheme.lower() != _BEARER:
        return None
    plaintext = credentials.strip()
    key_id = parse_key(plaintext)
    return None if key_id is None else (plaintext, key_id)


def tenants_topic(settings: Settings) -> str:
    return load_topics(settings.topic_prefix)[TENANTS].name


def tenant_record_key(tenant_id: str) -> str:
    return f"tenant/{tenant_id}"


def key_record_key(key_id: str) -> str:
    return f"key/{key_id}"


@dataclass(frozen=True, slots=True)
class Tenant:
    tenant_id: str
    name: str
    rate_per_s: float
    burst: int
    max_active_runs: int
    disabled: bool


@dataclass(frozen=True, slots=True)
class ApiKey:
    """What may be shown about a key: never its hash, never its secret."""

    key_id: str
    tenant_id: str
    label: str
    created_ms: int  # 0 when only the revocation survived compaction
    revoked: bool
    scopes: tuple[str, ...] = ()  # as issued; empty: the defaults (see `effective_scopes`)

    @property
    def effective_scopes(self) -> frozenset[str]:
        return effective_scopes(self.scopes)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as proven by an API key: its tenant and the key itself (id and scopes)."""

    tenant: Tenant
    key: ApiKey

    @property
    def tenant_id(self) -> str:
        return self.tenant.tenant_id

    @property
    def max_active_runs(self) -> int:
        return self.tenant.max_active_runs

    @property
    def key_id(self) -> str:
        return self.key.key_id

    @property
    def scopes(self) -> frozenset[str]:
        return self.key.effective_scopes


@dataclass(frozen=True, slots=True)
class _StoredKey:
    info: ApiKey
    key_hash: str  # "" once revoked: nothing may match it


class TenantDirectory(TopicTable):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, [tenants_topic(settings)])
        self._tenants: dict[str, Tenant] = {}
        self._keys: dict[str, _StoredKey] = {}
        self._reading: asyncio.Future[None] | None = None
        self._reading_started = float("-inf")

    def authenticate(self, authorization_header: str | None) -> Tenant | None:
        """The tenant of a valid `Bearer <key>`; None for anything else. Never raises on bad input."""
        found = self.identify(authorization_header)
        return None if found is None else found[0]

    def identify(self, authorization_header: str | None) -> tuple[Tenant, ApiKey] | None:
        """The tenant and the key of a valid `Bearer <key>`: who is calling, as proven by the key
        (what is recorded as a decider), not as any request body says. None for anything else."""
        presented = _presented_key(authorization_header)
        if presented is None:
            return None
        plaintext, key_id = presented
        stored = self._keys.get(key_id)
        # The key id is public, so finding its record leaks nothing; only the secret is compared,
        # in constant time.
        if stored is None or stored.info.revoked or not matches(plaintext, stored.key_hash):
            return None
        tenant = self._tenants.get(stored.info.tenant_id)
        if tenant is None or tenant.disabled:
            return None
        return tenant, stored.info

    async def identify_fresh(self, authorization_header: str | None) -> tuple[Tenant, ApiKey] | None:
        """`identify`, and for a well-formed key whose id this directory has not read yet (issued a
        moment ago: `keys issue` returns once the broker has it, the background poll may not have
        it yet), once more after reading the tenants topic to its end. Waiting callers share one
        read at a time, so a flood of made-up keys costs one read in flight, not one per request."""
        found = self.identify(authorization_header)
        presented = _presented_key(authorization_header)
        if found is not None or presented is None or presented[1] in self._keys:
            return found  # found, malformed, or known and refused: a read would change nothing
        asked = time.monotonic()
        while True:
            if self._reading is None or self._reading.done():
                self._reading = asyncio.ensure_future(self._read_to_end())
                self._reading_started = time.monotonic()
            reading, started = self._reading, self._reading_started
            await asyncio.shield(reading)
            if started >= asked:  # a read that began after the request: it saw the key if it exists
                return self.identify(authorization_header)

    async def _read_to_end(self) -> None:
        try:
            await self.catch_up(timeout_s=_FRESH_READ_TIMEOUT_S)
        except (TimeoutError, KafkaException) as exc:
            log.warning("could not read the tenants topic to its end: %s", exc)

    def principal(self, authorization_header: str | None) -> Principal | None:
        """`identify` as one value, the gateway's caller. None for anything but a valid key."""
        found = self.identify(authorization_header)
        return None if found is None else Principal(*found)

    def tenant(self, tenant_id: str) -> Tenant | None:
        return self._tenants.get(tenant_id)

    def tenants(self) -> list[Tenant]:
        return [self._tenants[t] for t in sorted(self._tenants)]

    def key(self, key_id: str) -> ApiKey | None:
        stored = self._keys.get(key_id)
        return stored.info if stored is not None else None

    def keys(self, tenant_id: str) -> list[ApiKey]:
        found = [s.info for s in self._keys.values() if s.info.tenant_id == tenant_id]
        return sorted(found, key=lambda k: (k.created_ms, k.key_id))

    def _on_tombstone(self, record_key: str) -> None:
        kind, _, ident = record_key.partition("/")  # an operator deleted the tenant or key outright
        if kind == "tenant":
            self._tenants.pop(ident, None)
        elif kind == "key":
            self._keys.pop(ident, None)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, TenantUpserted):
            self._tenants[event.tenant_id] = Tenant(
                event.tenant_id, event.name, event.rate_per_s, event.burst, event.max_active_runs, event.disabled
            )
        elif isinstance(event, ApiKeyIssued):
            info = ApiKey(
                event.key_id, event.tenant_id, event.label, event.created_ms, revoked=False, scopes=tuple(event.scopes)
            )
            self._keys[event.key_id] = _StoredKey(info, event.key_hash)
        elif isinstance(event, ApiKeyRevoked):
            previous = self._keys.get(event.key_id)
            label, created = (previous.info.label, previous.info.created_ms) if previous else ("", 0)
            scopes = previous.info.scopes if previous else ()
            self._keys[event.key_id] = _StoredKey(
                ApiKey(event.key_id, event.tenant_id, label, created, True, scopes), ""
            )
