"""Orchestrator versions: named, immutable definitions of how the orchestrator decides (its
OrchestratorConfig and its decision rules), held in a registry. A run pins the version it started
with in RunStarted and decides with that version's rules to its end, crashes included, so several
versions run side by side in one process; `choose_version` picks the version a new run starts on
(the default setting, or the canary rollout's choice for the run's ring)."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from agentstream.processors.orchestrator.decide import OrchestratorConfig, ToolRule
from agentstream.processors.orchestrator.state import RunState
from agentstream.rollout.rings import Rollout, version_for

# What a run pinned before versions existed ("" in RunStarted before v5) decided like.
BASELINE = "v1"


class VersionError(Exception):
    """Base of the typed errors below; the message says what to fix."""


class UnknownVersionError(VersionError, LookupError):
    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        super().__init__(f"unknown orchestrator version {name!r} (this process knows: {', '.join(sorted(known))})")


class VersionConflictError(VersionError):
    """A version is immutable: a second, different definition under a registered name is refused."""


class VersionLoadError(VersionError):
    """An operator's `module:attribute` that does not name an OrchestratorVersion."""


@dataclass(frozen=True)
class OrchestratorVersion:
    name: str
    config: OrchestratorConfig = field(default_factory=OrchestratorConfig)
    tool_rules: tuple[ToolRule, ...] = ()
    description: str = ""


V1 = OrchestratorVersion(BASELINE, description="the orchestrator as it decided before versions were named")
BUILTIN: tuple[OrchestratorVersion, ...] = (V1,)


class VersionRegistry:
    """The versions one orchestrator process can decide with, and the one new runs start on."""

    def __init__(self, versions: Iterable[OrchestratorVersion] = BUILTIN, default: str = BASELINE) -> None:
        self._versions: dict[str, OrchestratorVersion] = {}
        for version in versions:
            self.register(version)
        self.default = self.get(default).name  # an unknown default stops the process at its start

    def register(self, version: OrchestratorVersion) -> None:
        if not version.name:
            raise VersionConflictError("an orchestrator version needs a name")
        known = self._versions.get(version.name)
        if known is not None and known != version:
            raise VersionConflictError(
                f"orchestrator version {version.name!r} is already defined differently; a version never "
                "changes: register the new behaviour under a new name"
            )
        self._versions[version.name] = version

    def get(self, name: str) -> OrchestratorVersion:
        found = self._versions.get(name or BASELINE)
        if found is None:
            raise UnknownVersionError(name, self._versions)
        return found

    def names(self) -> list[str]:
        return sorted(self._versions)

    def with_default(self, name: str) -> VersionRegistry:
        """The same versions, new runs starting on `name` (runs already started keep theirs)."""
        return VersionRegistry(self._versions.values(), name)


def choose_version(
    registry: VersionRegistry, state: RunState, rollout: Rollout | None = None, tool_tiers: Iterable[str] = ()
) -> str:
    """The version a new run starts on: the registry's default, or what the canary rollout in
    force gives the run's ring (its tenant, its tools' risk tiers: agentstream.rollout.rings).
    Whatever is chosen is pinned at start; a candidate this process does not know fails the run
    clearly (UnknownVersionError), never falling back in silence."""
    return version_for(rollout, registry.default, state.tenant_id, tool_tiers)


def load_version(spec: str) -> OrchestratorVersion:
    """An operator's version from `package.module:attribute`: an OrchestratorVersion, or a
    function of no arguments returning one."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise VersionLoadError(f"{spec!r} is not module:attribute (e.g. mypkg.versions:CANDIDATE)")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an operator's module may fail in any way while importing
        raise VersionLoadError(
            f"cannot import {module_name!r} for version {spec!r}: {type(exc).__name__}: {exc}"
        ) from exc
    value = getattr(module, attribute, None)
    if callable(value) and not isinstance(value, OrchestratorVersion):
        value = value()
    if not isinstance(value, OrchestratorVersion):
        raise VersionLoadError(f"{spec!r} is {type(value).__name__}, not an OrchestratorVersion")
    return value


def resolve_version(registry: VersionRegistry, name_or_spec: str) -> OrchestratorVersion:
    """A registered version by name, or an operator's by `module:attribute` (shadow candidates)."""
    return load_version(name_or_spec) if ":" in name_or_spec else registry.get(name_or_spec)


def build_registry(default: str = BASELINE, extra: Iterable[str] = ()) -> VersionRegistry:
    """The builtin versions plus each operator `module:attribute` in `extra`, new runs starting on
    `default` (an unknown one is an UnknownVersionError here, before anything runs)."""
    registry = VersionRegistry(BUILTIN, BASELINE)
    for spec in extra:
        registry.register(load_version(spec))
    return registry.with_default(default)
