"""Tenant secrets on the compacted `secrets` topic: admin writes and an in-memory projection.

Writes seal the value before it leaves this process (`envelope.seal`), so Kafka, its replicas and
anything that reads the topic only ever see ciphertext. `SecretDirectory` tails the topic like the
tenant directory does and holds sealed values only; plaintext exists just inside
`CredentialBroker.exchange`, for the secrets a valid delegation names.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from agentstream.config import Settings
from agentstream.credentials.envelope import Sealed, seal, secret_aad
from agentstream.credentials.errors import SecretAdminError
from agentstream.credentials.grants import GrantError, parse_grant
from agentstream.credentials.keys import KeyProvider
from agentstream.events import Event, SecretDeleted, SecretStored
from agentstream.kafka.table import TopicTable, put_record
from agentstream.registry.admin import read_catalog
from agentstream.registry.pins import contract_digest
from agentstream.tenancy.admin import TenancyError, validate_tenant_id
from agentstream.tenancy.directory import TenantDirectory
from agentstream.topics import load_topics

SECRETS = "secrets"
# No "/" in names, so "secret/<tenant>/<name>" splits back unambiguously.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
# Tool names and scopes travel comma-separated on the command line and inside signed claims.
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/@-]{0,127}")
MAX_VALUE_BYTES = 64 * 1024


def secrets_topic(settings: Settings) -> str:
    return load_topics(settings.topic_prefix)[SECRETS].name


def secret_record_key(tenant_id: str, name: str) -> str:
    return f"secret/{tenant_id}/{name}"


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """What may be shown about a secret: never its value, not even sealed."""

    tenant_id: str
    name: str
    tools: tuple[str, ...]
    scopes: tuple[str, ...]
    version: int
    created_ms: int
    key_id: str


@dataclass(frozen=True, slots=True)
class StoredSecret:
    info: SecretInfo
    sealed: Sealed


def validate_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise SecretAdminError(
            f"invalid secret name {name!r}: use 1 to 128 characters of A-Z, a-z, 0-9, '_', '.' and '-', "
            "starting with a letter or digit"
        )
    return name


def _validate_labels(kind: str, labels: list[str], *, required: bool) -> tuple[str, ...]:
    if required and not labels:
        raise SecretAdminError(f"name at least one of the {kind} allowed to receive the secret")
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise SecretAdminError(f"invalid {kind[:-1]} {label!r}: no spaces or commas, at most 128 characters")
    return tuple(sorted(set(labels)))


async def _validate_grants(settings: Settings, tenant_id: str, tools: list[str]) -> tuple[str, ...]:
    """The grants as stored: each names a tool's identity (agentstream.credentials.grants). A grant
    to the tenant's own tool without a digest is bound to the contract of its latest version now."""
    if not tools:
        raise SecretAdminError("name at least one of the tools allowed to receive the secret")
    stored: set[str] = set()
    for text in tools:
        try:
            grant = parse_grant(text)
        except GrantError as exc:
            raise SecretAdminError(str(exc)) from None
        if grant.owner and grant.owner != tenant_id:
            raise SecretAdminError(
                f"tool grant {text!r} names tenant {grant.owner}'s tool: a secret of {tenant_id} may be "
                f"granted to platform tools and {tenant_id}'s own"
            )
        if grant.owner and not grant.digest:
            latest = (await read_catalog(settings)).latest(grant.owner, grant.name)
            if latest is None:
                raise SecretAdminError(
                    f"no tool {grant.name} of tenant {grant.owner} to grant the secret to: register it first "
                    f"(a tenant tool is granted by the digest of its contract)"
                )
            stored.add(f"{grant.text}@{contract_digest(latest)}")
        else:
            stored.add(text)
    return tuple(sorted(stored))


class SecretDirectory(TopicTable):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, [secrets_topic(settings)])
        self._secrets: dict[tuple[str, str], StoredSecret] = {}

    def get(self, tenant_id: str, name: str) -> StoredSecret | None:
        return self._secrets.get((tenant_id, name))

    def secrets(self, tenant_id: str) -> list[SecretInfo]:
        return sorted((s.info for (t, _), s in self._secrets.items() if t == tenant_id), key=lambda i: i.name)

    def _on_tombstone(self, record_key: str) -> None:
        _, tenant_id, name = [*record_key.split("/", 2), "", ""][:3]
        self._secrets.pop((tenant_id, name), None)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, SecretStored):
            info = SecretInfo(
                event.tenant_id,
                event.name,
                tuple(event.tools),
                tuple(event.scopes),
                event.version,
                event.created_ms,
                event.key_id,
            )
            sealed = Sealed(event.key_id, event.wrapped_key, event.nonce, event.ciphertext)
            self._secrets[(event.tenant_id, event.name)] = StoredSecret(info, sealed)
        elif isinstance(event, SecretDeleted):
            self._secrets.pop((event.tenant_id, event.name), None)


async def _read_directory(settings: Settings) -> SecretDirectory:
    directory = SecretDirectory(settings)
    try:
        await directory.start()
    finally:
        directory.close()
    return directory


async def _require_tenant(settings: Settings, tenant_id: str) -> None:
    try:
        validate_tenant_id(tenant_id)
    except TenancyError as exc:
        raise SecretAdminError(str(exc)) from exc
    async with TenantDirectory(settings) as tenants:
        if tenants.tenant(tenant_id) is None:
            raise SecretAdminError(f"no tenant {tenant_id} (create it with `agentstream tenants create {tenant_id}`)")


async def _publish(settings: Settings, event: Event) -> None:
    await put_record(settings, secrets_topic(settings), event)


async def put_secret(
    settings: Settings,
    provider: KeyProvider,
    tenant_id: str,
    name: str,
    value: str,
    tools: list[str],
    scopes: list[str],
) -> SecretInfo:
    """Stores (or replaces, as the next version) a tenant's secret; only its ciphertext is written."""
    validate_name(name)
    allowed_tools = await _validate_grants(settings, tenant_id, tools)
    required_scopes = _validate_labels("scopes", scopes, required=False)
    plaintext = value.encode()
    if not plaintext or len(plaintext) > MAX_VALUE_BYTES:
        raise SecretAdminError(f"a secret's value must be 1 to {MAX_VALUE_BYTES} bytes, not {len(plaintext)}")
    await _require_tenant(settings, tenant_id)
    previous = (await _read_directory(settings)).get(tenant_id, name)
    sealed = seal(provider, plaintext, secret_aad(tenant_id, name))
    info = SecretInfo(
        tenant_id,
        name,
        allowed_tools,
        required_scopes,
        previous.info.version + 1 if previous else 1,
        int(time.time() * 1000),
        sealed.key_id,
    )
    await _publish(
        settings,
        SecretStored(
            event_id=secret_record_key(tenant_id, name),
            tenant_id=tenant_id,
            name=name,
            key_id=sealed.key_id,
            wrapped_key=sealed.wrapped_key,
            nonce=sealed.nonce,
            ciphertext=sealed.ciphertext,
            tools=list(info.tools),
            scopes=list(info.scopes),
            version=info.version,
            created_ms=info.created_ms,
        ),
    )
    return info


async def delete_secret(settings: Settings, tenant_id: str, name: str) -> SecretInfo:
    """Deletes a secret for good; returns what it was. Unknown secrets are an error (likely a typo)."""
    validate_name(name)
    current = (await _read_directory(settings)).get(tenant_id, name)
    if current is None:
        raise SecretAdminError(f"no secret {name} for tenant {tenant_id}")
    deleted = SecretDeleted(
        event_id=secret_record_key(tenant_id, name), tenant_id=tenant_id, name=name, deleted_ms=int(time.time() * 1000)
    )
    await _publish(settings, deleted)
    return current.info


async def list_secrets(settings: Settings, tenant_id: str) -> list[SecretInfo]:
    """Names, tools, scopes and versions of a tenant's secrets; never values."""
    await _require_tenant(settings, tenant_id)
    return (await _read_directory(settings)).secrets(tenant_id)


class SecretVault:
    """The admin operations bound to one deployment's settings and key provider."""

    def __init__(self, settings: Settings, provider: KeyProvider) -> None:
        self._settings = settings
        self._provider = provider

    async def put_secret(
        self, tenant_id: str, name: str, value: str, tools: list[str], scopes: list[str]
    ) -> SecretInfo:
        return await put_secret(self._settings, self._provider, tenant_id, name, value, tools, scopes)

    async def delete_secret(self, tenant_id: str, name: str) -> SecretInfo:
        return await delete_secret(self._settings, tenant_id, name)

    async def list_secrets(self, tenant_id: str) -> list[SecretInfo]:
        return await list_secrets(self._settings, tenant_id)
