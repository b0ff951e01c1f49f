"""The registry as every process sees it: a projection of the tools.catalog and control topics.

Fed by `CatalogReader` (or directly, in tests): each record is applied in order, so the view is a
pure function of the two topics.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from agentstream.events import Event, TenantPolicySet, ToolRegistered, ToolSwitched, WorkflowRegistered
from agentstream.registry.entry import TenantPolicy, ToolEntry
from agentstream.registry.schema_guard import MAX_SCHEMA_BYTES
from agentstream.workflows.book import WorkflowBook

# A tenant's share of the registry, which every process holds in memory: registration refuses past
# these, and the projection ignores a record past them (only a path that skipped the checks writes one).
MAX_VERSIONS_PER_TOOL = 50
MAX_VERSIONS_PER_TENANT = 500


@dataclass
class ToolCatalog:
    versions: dict[tuple[str, str], dict[str, ToolEntry]] = field(default_factory=dict)
    switches: dict[tuple[str, str], ToolSwitched] = field(default_factory=dict)
    policies: dict[str, TenantPolicy] = field(default_factory=dict)
    owned: dict[str, int] = field(default_factory=dict)  # tool versions per tenant
    workflows: WorkflowBook = field(default_factory=WorkflowBook)  # registered beside the tools

    def apply(self, event: Event) -> None:
        match event:
            case ToolRegistered():
                known = event.version in self.versions.get((event.owner, event.name), {})
                if not known and (
                    self.version_cap(event.owner, event.name) or len(event.input_schema_json) > MAX_SCHEMA_BYTES
                ):
                    return
                try:
                    entry = ToolEntry.from_event(event)
                except (ValueError, TypeError):
                    return  # unreadable JSON in a record: never a tool, never a crashed reader
                self.versions.setdefault((entry.owner, entry.name), {})[entry.version] = entry
                if not known and entry.owner:
                    self.owned[entry.owner] = self.owned.get(entry.owner, 0) + 1
            case ToolSwitched():
                self.switches[(event.owner, event.name)] = event
            case WorkflowRegistered():
                self.workflows.apply(event)
            case TenantPolicySet():
                # A malformed policy keeps the previous one rather than opening everything.
                with contextlib.suppress(ValueError, TypeError):
                    self.policies[event.tenant_id] = TenantPolicy.from_json(event.policy_json)

    def version_cap(self, owner: str, name: str) -> str | None:
        """Why `owner` may not add a version of `name` (None: it may). Platform tools are uncapped."""
        if not owner:
            return None
        if len(self.versions.get((owner, name), {})) >= MAX_VERSIONS_PER_TOOL:
            return f"tool {name!r} already has {MAX_VERSIONS_PER_TOOL} versions, the most a tool may have"
        if self.owned.get(owner, 0) >= MAX_VERSIONS_PER_TENANT:
            return f"tenant {owner} already has {MAX_VERSIONS_PER_TENANT} tool versions, the most a tenant may have"
        return None

    def latest(self, owner: str, name: str) -> ToolEntry | None:
        versions = self.versions.get((owner, name))
        if not versions:
            return None
        return versions[max(versions, key=_version_order)]

    def visible(self, tenant_id: str) -> dict[str, ToolEntry]:
        """The latest version of each tool a tenant may use: platform tools, and its own, which
        take precedence over a platform tool of the same name."""
        found: dict[str, ToolEntry] = {}
        for owner in ("", tenant_id):
            for (o, name), _ in self.versions.items():
                if o == owner:
                    entry = self.latest(o, name)
                    if entry is not None:
                        found[name] = entry
        return found

    def pinned(self, tenant_id: str, name: str, version: str) -> ToolEntry | None:
        """The exact version a run pinned, looked up as `visible` resolves names."""
        for owner in (tenant_id, ""):
            entry = self.versions.get((owner, name), {}).get(version)
            if entry is not None and (owner == tenant_id or (tenant_id, name) not in self.versions):
                return entry
        return None

    def switched_off(self, entry: ToolEntry) -> ToolSwitched | None:
        switch = self.switches.get((entry.owner, entry.name))
        return switch if switch is not None and switch.disabled else None

    def policy(self, tenant_id: str) -> TenantPolicy:
        return self.policies.get(tenant_id) or TenantPolicy()


def _version_order(version: str) -> tuple[int, str]:
    return (int(version), version) if version.isdigit() else (-1, version)
