"""The registry as every process sees it: a projection of the tools.catalog and control topics.

Fed by `CatalogReader` (or directly, in tests): each record is applied in order, so the view is a
pure function of the two topics.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from agentstream.events import Event, TenantPolicySet, ToolRegistered, ToolSwitched
from agentstream.registry.entry import TenantPolicy, ToolEntry


@dataclass
class ToolCatalog:
    versions: dict[tuple[str, str], dict[str, ToolEntry]] = field(default_factory=dict)
    switches: dict[tuple[str, str], ToolSwitched] = field(default_factory=dict)
    policies: dict[str, TenantPolicy] = field(default_factory=dict)

    def apply(self, event: Event) -> None:
        match event:
            case ToolRegistered():
                entry = ToolEntry.from_event(event)
                self.versions.setdefault((entry.owner, entry.name), {})[entry.version] = entry
            case ToolSwitched():
                self.switches[(event.owner, event.name)] = event
            case TenantPolicySet():
                # A malformed policy keeps the previous one rather than opening everything.
                with contextlib.suppress(ValueError, TypeError):
                    self.policies[event.tenant_id] = TenantPolicy.from_json(event.policy_json)

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
