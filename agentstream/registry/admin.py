"""Registry administration (what `agentstream tools` and `/v1/tools` run): register a tool version,
switch a tool off or on (the kill switch), and set a tenant's tool policy."""

from __future__ import annotations

import dataclasses
import re
import time

from agentstream.config import Settings
from agentstream.context.settings import ContextSettingsError, parse_settings
from agentstream.evaluation.policy import EvalPolicyError, parse_policy
from agentstream.events import Event, TenantPolicySet, ToolSwitched
from agentstream.kafka.producer import AsyncProducer, producer_config
from agentstream.kafka.table import put_record
from agentstream.netguard import EgressRefused
from agentstream.registry.catalog import ToolCatalog
from agentstream.registry.destinations import check_destinations
from agentstream.registry.entry import (
    MAX_APPROVAL_TIMEOUT_S,
    MIN_APPROVAL_TIMEOUT_S,
    TIERS,
    TenantPolicy,
    ToolEntry,
    policy_key,
    switch_key,
)
from agentstream.registry.reader import CatalogReader
from agentstream.registry.schema_guard import SchemaRefused, check_tool_schema
from agentstream.sandbox.policy import parse_allow_entry
from agentstream.topics import CATALOG, CONTROL, load_topics

TOOL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class RegistryError(Exception):
    """A user error with a message fit to show as is (bad name, unknown tool, bad tier)."""


async def read_catalog(settings: Settings) -> ToolCatalog:
    async with CatalogReader(settings) as reader:
        return reader.catalog


async def _publish(settings: Settings, topic_name: str, event: Event, producer: AsyncProducer | None = None) -> None:
    await put_record(settings, load_topics(settings.topic_prefix)[topic_name].name, event, producer)


def validate_entry(entry: ToolEntry) -> None:
    if not TOOL_NAME.fullmatch(entry.name):
        raise RegistryError(f"invalid tool name {entry.name!r}: 1-64 characters of A-Z a-z 0-9 _ . -")
    if entry.tier not in TIERS:
        raise RegistryError(f"risk tier must be one of {', '.join(TIERS)}, not {entry.tier!r}")
    if entry.input_schema.get("type", "object") != "object":
        raise RegistryError("a tool's argument schema must describe a JSON object")
    try:
        check_tool_schema(entry.input_schema)  # bounded, RE2-only patterns, local references
    except SchemaRefused as exc:
        raise RegistryError(str(exc)) from exc
    kind = entry.transport.get("kind")
    if kind not in ("builtin", "stdio", "http"):
        raise RegistryError("transport kind must be builtin, stdio or http")
    if kind == "stdio" and not entry.transport.get("command"):
        raise RegistryError("a stdio tool needs a command")
    if kind == "http" and not str(entry.transport.get("url", "")).startswith(("http://", "https://")):
        raise RegistryError("an http tool needs an http(s) URL")
    if kind == "http" and not entry.egress:
        raise RegistryError("an http tool's egress allowlist must name its server (host or host:port)")
    for allowed in entry.egress:
        try:
            parse_allow_entry(allowed)
        except ValueError as exc:
            raise RegistryError(str(exc)) from exc
    if not 100 <= entry.timeout_ms <= 3_600_000:
        raise RegistryError("timeout must be between 0.1 s and 1 h")
    if entry.approval_timeout_s is not None:
        _check_approval_timeout(entry.approval_timeout_s)
    if "approval_timeout_s" in entry.transport:
        # Its own field now: a second place to set it would leave two deadlines to reconcile.
        raise RegistryError("approval_timeout_s is a field of the registration, not of its transport")


def _check_approval_timeout(seconds: float) -> None:
    # 0 or less would deny every approval the moment it is asked (a kill switch in disguise).
    if not MIN_APPROVAL_TIMEOUT_S <= seconds <= MAX_APPROVAL_TIMEOUT_S:
        raise RegistryError(
            f"approval timeout must be between {MIN_APPROVAL_TIMEOUT_S:g} s and {MAX_APPROVAL_TIMEOUT_S:g} s (7 days)"
        )


async def register_tool(
    settings: Settings, draft: ToolEntry, catalog: ToolCatalog | None = None, producer: AsyncProducer | None = None
) -> ToolEntry:
    """Registers `draft` as a new version when its contract differs from the latest one, and
    returns the latest one unchanged otherwise (registering is idempotent)."""
    validate_entry(draft)
    try:
        await check_destinations(draft)  # no internal address in its allowlist or URL
    except EgressRefused as exc:
        raise RegistryError(str(exc)) from exc
    catalog = catalog if catalog is not None else await read_catalog(settings)
    latest = catalog.latest(draft.owner, draft.name)
    if latest is not None and latest.same_contract(draft):
        return latest
    refusal = catalog.version_cap(draft.owner, draft.name)
    if refusal is not None:
        raise RegistryError(refusal)
    version = str(int(latest.version) + 1) if latest is not None and latest.version.isdigit() else "1"
    entry = dataclasses.replace(draft, version=version, registered_ms=int(time.time() * 1000))
    event = entry.to_event()
    await _publish(settings, CATALOG, event, producer)
    catalog.apply(event)
    return entry


async def register_tools(settings: Settings, drafts: list[ToolEntry]) -> list[ToolEntry]:
    """Registers a server's tools in one go (`tools discover --tiers`): one catalog read and one
    producer for them all, each draft as `register_tool` would, in order."""
    catalog = await read_catalog(settings)
    producer = AsyncProducer(producer_config(settings.bootstrap_servers, settings.kafka_extra))
    try:
        return [await register_tool(settings, draft, catalog, producer) for draft in drafts]
    finally:
        await producer.aclose()


async def switch_tool(settings: Settings, owner: str, name: str, *, disabled: bool, reason: str, by: str) -> None:
    """The kill switch: every policy gate and executor stops (or resumes) the tool within seconds."""
    catalog = await read_catalog(settings)
    if catalog.latest(owner, name) is None:
        raise RegistryError(f"no tool {name!r}" + (f" owned by {owner}" if owner else " on the platform"))
    event = ToolSwitched(switch_key(owner, name), owner, name, disabled, reason, by, int(time.time() * 1000))
    await _publish(settings, CONTROL, event)


async def set_policy(settings: Settings, tenant_id: str, policy: TenantPolicy, by: str) -> None:
    _check_approval_timeout(policy.approval_timeout_s)
    try:
        # A default the orchestrator cannot parse would fail every run of the tenant at its start.
        parse_settings(policy.context_json)
    except ContextSettingsError as exc:
        raise RegistryError(f"the tenant's default {exc}") from None
    try:  # a procedure or constant the checks cannot read is refused now, not ignored in every run
        parse_policy(policy.eval_json)
    except EvalPolicyError as exc:
        raise RegistryError(str(exc)) from None
    event = TenantPolicySet(policy_key(tenant_id), tenant_id, policy.to_json(), by, int(time.time() * 1000))
    await _publish(settings, CONTROL, event)
