"""Every declared topic is replicated three ways with two in sync on a three-broker cluster, as
topics.yaml declares it (the cluster itself: tests/e2e/test_local_cluster.py)."""

from __future__ import annotations

from agentstream.topics import load_topics


def test_every_declared_topic_is_replicated_three_ways_with_two_in_sync() -> None:
    for spec in load_topics("x").values():
        assert spec.replication_factor == 3, spec.name
        assert (spec.replicas_on(1), spec.replicas_on(3), spec.replicas_on(5)) == (1, 3, 3)
        assert spec.config_at(3)["min.insync.replicas"] == "2"
        assert spec.config_at(1)["min.insync.replicas"] == "1"
