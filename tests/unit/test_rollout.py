"""Canary rings, pure: a run's ring, and the version a new run starts on under a rollout."""

from __future__ import annotations

import pytest

from agentstream.rollout.rings import PROMOTED, ROLLED_BACK, ROLLING, Rollout, ring_of, version_for


@pytest.mark.parametrize(
    ("tenant", "tiers", "ring"),
    [
        ("staff", ["irreversible"], 1),
        ("acme", [], 2),
        ("acme", ["read_only", "read_only"], 2),
        ("acme", ["read_only", "reversible"], 3),
        ("acme", ["read_only", "irreversible"], 4),
        ("acme", ["a-tier-nobody-knows"], 3),
    ],
)
def test_a_runs_ring_follows_its_tenant_and_its_tools_tiers(tenant: str, tiers: list[str], ring: int) -> None:
    assert ring_of(tenant, tiers, ["staff"]) == ring


def test_the_rings_up_to_the_rollouts_start_on_the_candidate_the_rest_on_the_baseline() -> None:
    def at(ring: int, status: str = ROLLING) -> Rollout:
        return Rollout("v2", "v1", ring, status, ("staff",))

    reads, pays = ["read_only"], ["irreversible"]
    assert version_for(None, "v1", "acme", reads) == "v1"
    assert version_for(at(1), "v1", "staff", pays) == "v2" and version_for(at(1), "v1", "acme", reads) == "v1"
    assert version_for(at(2), "v1", "acme", reads) == "v2" and version_for(at(2), "v1", "acme", pays) == "v1"
    assert version_for(at(4), "v1", "acme", pays) == "v2"
    assert version_for(at(1, PROMOTED), "v1", "acme", pays) == "v2"
    assert version_for(at(4, ROLLED_BACK), "v0", "staff", reads) == "v1"  # the rollout's baseline, not the default
    assert at(2).ring_name == "read_only" and at(0).ring_name == "none"
