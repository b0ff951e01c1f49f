"""State changelogs without a broker: every processor's changelog topic as topics.yaml declares it,
and a restore that cannot reach a broker (the broker side: tests/integration/test_changelog.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentstream.kafka.changelog import changelog_short_name, changelog_topic
from agentstream.kafka.recovery import RestoreError, restore
from agentstream.kafka.state import PartitionStore
from agentstream.localkafka import free_port
from agentstream.processors.catalog import CORES
from agentstream.topics import JOURNAL, load_topics


def test_every_processor_has_a_changelog_partitioned_like_the_journal() -> None:
    topics = load_topics("x")
    for processor in CORES:
        spec = topics[changelog_short_name(processor)]
        assert spec.name == changelog_topic("x", processor)
        assert spec.partitions == topics[JOURNAL].partitions  # journal partition p is changelog partition p
        assert spec.config["cleanup.policy"] == "compact"
        # Nobody else reads its state: the processor, and the engine process that may host it.
        assert spec.writers == (processor, "engine") and spec.readers == (processor, "engine")


def test_a_restore_that_cannot_reach_the_broker_fails_typed_and_leaves_nothing_half_written(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "cut")
    store.write_raw({b"run/a": b"1"})  # left by an earlier restore cut short: keys, no offset
    with pytest.raises(RestoreError):
        restore(f"127.0.0.1:{free_port()}", None, "nowhere.changelog.orchestrator", 0, store, stall_s=1.0)
    assert store.committed() == {} and store.offset() is None  # a replay from the beginning starts clean
    store.close()
