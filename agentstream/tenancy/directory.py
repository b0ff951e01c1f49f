"""The tenant directory: an in-memory projection of the `tenants` topic that authenticates callers.

The gateway keeps no state of its own here: `start()` rebuilds the directory from the compacted
topic, and `poll()` / `refresh()` / `run()` keep it current, so a revoked key or a disabled tenant
stops authenticating within one poll of the record reaching the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from types import TracebackType

from confluent_kafka import Message

from agentstream.codec import AvroCodec, DecodeError
from agentstream.config import Settings
from agentstream.events import ApiKeyIssued, ApiKeyRevoked, TenantUpserted
from agentstream.kafka.consumer import TableReader
from agentstream.process import wait_for_kafka
from agentstream.tenancy.keys import MAX_KEY_LENGTH, matches, parse_key
from agentstream.topics import load_topics

log = logging.getLogger("agentstream.tenancy")

TENANTS = "tenants"
_BEARER = "bearer"
# Throttles `refresh()`: one non-blocking fetch per 10 ms at most bounds the cost at any request
# rate, and 10 ms is far below how long a new record takes to reach this consumer anyway.
_REFRESH_INTERVAL_S = 0.01


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


@dataclass(frozen=True, slots=True)
class _StoredKey:
    info: ApiKey
    key_hash: str  # "" once revoked: nothing may match it


class TenantDirectory:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topic = tenants_topic(settings)
        self._codec = AvroCodec()
        self._tenants: dict[str, Tenant] = {}
        self._keys: dict[str, _StoredKey] = {}
        self._reader: TableReader | None = None
        self._last_poll = float("-inf")

    async def start(self, timeout_s: float = 30.0) -> None:
        """Waits for the broker and the topic (saying clearly what is missing), then reads it whole."""
        await wait_for_kafka(self._settings, self._topic)
        self._reader = TableReader(
            self._settings.bootstrap_servers, self._topic, self._apply, self._settings.kafka_extra
        )
        await self._reader.catch_up(timeout_s)

    async def catch_up(self, timeout_s: float = 30.0) -> None:
        """Reads up to the topic's current end: sees every write acknowledged before this call."""
        await self._started().catch_up(timeout_s)

    def poll(self) -> int:
        """Applies the records already fetched, without blocking; returns how many."""
        self._last_poll = time.monotonic()
        total = 0
        while count := self._started().poll_nowait():
            total += count
        return total

    def refresh(self) -> None:
        """`poll()` cheap enough to call on every request."""
        if time.monotonic() - self._last_poll >= _REFRESH_INTERVAL_S:
            self.poll()

    async def run(self, stop: asyncio.Event, interval_s: float = 0.1) -> None:
        """Polls every `interval_s` until `stop` is set: the background alternative to `refresh()`."""
        while not stop.is_set():
            self.poll()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    async def __aenter__(self) -> TenantDirectory:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _started(self) -> TableReader:
        if self._reader is None:
            raise RuntimeError("TenantDirectory.start() was not called")
        return self._reader

    def authenticate(self, authorization_header: str | None) -> Tenant | None:
        """The tenant of a valid `Bearer <key>`; None for anything else. Never raises on bad input."""
        if not isinstance(authorization_header, str) or len(authorization_header) > MAX_KEY_LENGTH + 64:
            return None
        scheme, _, credentials = authorization_header.strip().partition(" ")
        if scheme.lower() != _BEARER:
            return None
        plaintext = credentials.strip()
        key_id = parse_key(plaintext)
        stored = self._keys.get(key_id) if key_id is not None else None
        # The key id is public, so finding its record leaks nothing; only the secret is compared,
        # in constant time.
        if stored is None or stored.info.revoked or not matches(plaintext, stored.key_hash):
            return None
        tenant = self._tenants.get(stored.info.tenant_id)
        if tenant is None or tenant.disabled:
            return None
        return tenant

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

    def _apply(self, msg: Message) -> None:
        # Runs on the reader's thread during catch_up(); each update is one dict assignment, which
        # readers on the event loop see either entirely or not at all.
        record_key = (msg.key() or b"").decode(errors="replace")
        value = msg.value()
        if value is None:  # tombstone: an operator deleted the tenant or key outright
            kind, _, ident = record_key.partition("/")
            if kind == "tenant":
                self._tenants.pop(ident, None)
            elif kind == "key":
                self._keys.pop(ident, None)
            return
        try:
            event = self._codec.decode(value)
        except DecodeError as exc:
            # An undecodable record must not take the gateway down; it is skipped, loudly.
            log.error("skipping record %r on %s at offset %s: %s", record_key, self._topic, msg.offset(), exc)
            return
        if isinstance(event, TenantUpserted):
            self._tenants[event.tenant_id] = Tenant(
                event.tenant_id, event.name, event.rate_per_s, event.burst, event.max_active_runs, event.disabled
            )
        elif isinstance(event, ApiKeyIssued):
            info = ApiKey(event.key_id, event.tenant_id, event.label, event.created_ms, revoked=False)
            self._keys[event.key_id] = _StoredKey(info, event.key_hash)
        elif isinstance(event, ApiKeyRevoked):
            previous = self._keys.get(event.key_id)
            label, created = (previous.info.label, previous.info.created_ms) if previous else ("", 0)
            self._keys[event.key_id] = _StoredKey(ApiKey(event.key_id, event.tenant_id, label, created, True), "")
