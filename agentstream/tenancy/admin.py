"""Tenant and key administration (what `agentstream tenants` / `agentstream keys` run).

Every change is one record on the compacted `tenants` topic. Each function first reads the topic
whole, so it checks against the current state (an existing tenant, a known key); two admins racing
on the same tenant resolve as last write wins, like any compacted record.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from agentstream.config import Settings
from agentstream.events import ApiKeyIssued, ApiKeyRevoked, Event, TenantUpserted
from agentstream.kafka.table import put_record
from agentstream.tenancy.directory import (
    ApiKey,
    Tenant,
    TenantDirectory,
    key_record_key,
    tenant_record_key,
    tenants_topic,
)
from agentstream.tenancy.keys import generate_key, hash_secret, is_key_id
from agentstream.tenancy.scopes import ScopeError, normalize_scopes

_TENANT_ID = re.compile(r"[a-z0-9][a-z0-9-]{1,62}")
_INT32_MAX = 2**31 - 1  # burst and max_active_runs are Avro ints


class TenancyError(Exception):
    """A user error with a message fit to show as is (unknown tenant, bad id, bad limit)."""


def validate_tenant_id(tenant_id: str) -> str:
    if not _TENANT_ID.fullmatch(tenant_id):
        raise TenancyError(
            f"invalid tenant id {tenant_id!r}: use 2 to 63 characters of a-z, 0-9 and '-', "
            "starting with a letter or digit"
        )
    return tenant_id


def _validate_limits(rate_per_s: float, burst: int, max_active_runs: int) -> None:
    if not (math.isfinite(rate_per_s) and rate_per_s > 0):
        raise TenancyError(f"rate must be a positive number of requests per second, not {rate_per_s}")
    if not 1 <= burst <= _INT32_MAX:
        raise TenancyError(f"burst must be between 1 and {_INT32_MAX}, not {burst}")
    if not 1 <= max_active_runs <= _INT32_MAX:
        raise TenancyError(f"max active runs must be between 1 and {_INT32_MAX}, not {max_active_runs}")


@asynccontextmanager
async def _directory(settings: Settings) -> AsyncIterator[TenantDirectory]:
    directory = TenantDirectory(settings)
    try:
        await directory.start()
        yield directory
    finally:
        directory.close()


async def _publish(settings: Settings, event: Event) -> None:
    await put_record(settings, tenants_topic(settings), event)


def _upserted(tenant: Tenant) -> TenantUpserted:
    return TenantUpserted(
        event_id=tenant_record_key(tenant.tenant_id),
        tenant_id=tenant.tenant_id,
        name=tenant.name,
        rate_per_s=tenant.rate_per_s,
        burst=tenant.burst,
        max_active_runs=tenant.max_active_runs,
        disabled=tenant.disabled,
    )


async def create_tenant(
    settings: Settings,
    tenant_id: str,
    name: str,
    rate_per_s: float = 5.0,
    burst: int = 20,
    max_active_runs: int = 50,
) -> Tenant:
    validate_tenant_id(tenant_id)
    _validate_limits(rate_per_s, burst, max_active_runs)
    async with _directory(settings) as directory:
        if directory.tenant(tenant_id) is not None:
            raise TenancyError(f"tenant {tenant_id} already exists (use `agentstream tenants update`)")
    tenant = Tenant(tenant_id, name or tenant_id, rate_per_s, burst, max_active_runs, disabled=False)
    await _publish(settings, _upserted(tenant))
    return tenant


async def update_tenant(
    settings: Settings,
    tenant_id: str,
    *,
    name: str | None = None,
    rate_per_s: float | None = None,
    burst: int | None = None,
    max_active_runs: int | None = None,
    disabled: bool | None = None,
) -> Tenant:
    """Changes the given settings and keeps the others."""
    validate_tenant_id(tenant_id)
    async with _directory(settings) as directory:
        current = directory.tenant(tenant_id)
    if current is None:
        raise TenancyError(f"no tenant {tenant_id} (create it with `agentstream tenants create {tenant_id}`)")
    tenant = Tenant(
        tenant_id,
        current.name if name is None else name,
        current.rate_per_s if rate_per_s is None else rate_per_s,
        current.burst if burst is None else burst,
        current.max_active_runs if max_active_runs is None else max_active_runs,
        current.disabled if disabled is None else disabled,
    )
    _validate_limits(tenant.rate_per_s, tenant.burst, tenant.max_active_runs)
    await _publish(settings, _upserted(tenant))
    return tenant


async def issue_key(
    settings: Settings, tenant_id: str, label: str = "", scopes: list[str] | tuple[str, ...] | None = None
) -> str:
    """Issues a key and returns its plaintext, which exists nowhere else: only its hash is written.
    `scopes`: what it may do (agentstream.tenancy.scopes); None or empty: the defaults, which do
    not include deciding approvals."""
    validate_tenant_id(tenant_id)
    try:
        granted = normalize_scopes(scopes or ())
    except ScopeError as exc:
        raise TenancyError(str(exc)) from exc
    async with _directory(settings) as directory:
        if directory.tenant(tenant_id) is None:
            raise TenancyError(f"no tenant {tenant_id} (create it with `agentstream tenants create {tenant_id}`)")
    key_id, plaintext = generate_key()
    await _publish(
        settings,
        ApiKeyIssued(
            event_id=key_record_key(key_id),
            key_id=key_id,
            tenant_id=tenant_id,
            key_hash=hash_secret(plaintext),
            label=label,
            created_ms=int(time.time() * 1000),
            scopes=list(granted),
        ),
    )
    return plaintext


async def revoke_key(settings: Settings, key_id: str) -> ApiKey:
    """Revokes a key for good; revoking a revoked key is a no-op. Returns the key as it was."""
    if not is_key_id(key_id):
        raise TenancyError(f"invalid key id {key_id!r}: expected 12 hex characters (see `agentstream keys list`)")
    async with _directory(settings) as directory:
        key = directory.key(key_id)
    if key is None:
        raise TenancyError(f"no key {key_id}")
    if not key.revoked:
        await _publish(settings, ApiKeyRevoked(event_id=key_record_key(key_id), key_id=key_id, tenant_id=key.tenant_id))
    return key


async def list_tenants(settings: Settings) -> list[Tenant]:
    async with _directory(settings) as directory:
        return directory.tenants()


async def list_keys(settings: Settings, tenant_id: str) -> list[ApiKey]:
    validate_tenant_id(tenant_id)
    async with _directory(settings) as directory:
        if directory.tenant(tenant_id) is None:
            raise TenancyError(f"no tenant {tenant_id}")
        return directory.keys(tenant_id)
