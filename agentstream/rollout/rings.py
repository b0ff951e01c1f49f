"""Rings and the version a new run starts on: pure.

A run's ring follows from who it is for and what it can do: the platform's own (internal) tenants
first, then runs whose tools only read, then runs that cannot do anything irreversible, then every
run (irreversible-tier tools last). A rollout at ring N starts the runs of rings 1..N on the
candidate and every other run on the baseline; what a run starts on it keeps to its end (it is
pinned in RunStarted), so a rollback moves new runs only."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

RINGS = ("internal", "read_only", "reversible", "all")
ROLLING, PROMOTED, ROLLED_BACK = "rolling", "promoted", "rolled_back"


@dataclass(frozen=True, slots=True)
class Rollout:
    candidate: str
    baseline: str
    ring: int  # 1..4: the rings whose new runs start on the candidate
    status: str  # rolling, promoted (every ring, for good) or rolled_back (none)
    internal_tenants: tuple[str, ...] = ()
    reason: str = ""

    @property
    def ring_name(self) -> str:
        return RINGS[self.ring - 1] if 1 <= self.ring <= len(RINGS) else "none"


def ring_of(tenant: str, tool_tiers: Iterable[str], internal_tenants: Iterable[str]) -> int:
    """1 internal tenant, 2 read-only tools only, 3 nothing irreversible, 4 the rest."""
    if tenant in set(internal_tenants):
        return 1
    tiers = set(tool_tiers)
    if tiers <= {"read_only"}:
        return 2
    if "irreversible" not in tiers:
        return 3
    return 4


def version_for(rollout: Rollout | None, default: str, tenant: str, tool_tiers: Iterable[str]) -> str:
    """The version a new run starts on under `rollout` (none: the deployment's default)."""
    if rollout is None or rollout.status == ROLLED_BACK:
        return default if rollout is None else rollout.baseline
    if rollout.status == PROMOTED:
        return rollout.candidate
    in_ring = ring_of(tenant, tool_tiers, rollout.internal_tenants) <= rollout.ring
    return rollout.candidate if in_ring else rollout.baseline
