"""topics.yaml without a broker: every topic declares its settings, and only components write or read
(creating and verifying topics on a broker: tests/integration/test_topics.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentstream.topics import load_topics


def test_every_topic_declares_its_settings() -> None:
    for spec in load_topics("x").values():
        assert spec.partitions >= 1 and spec.writers
        assert "cleanup.policy" in spec.config and "retention.ms" in spec.config


def test_writers_and_readers_must_be_components(tmp_path: Path) -> None:
    bad = tmp_path / "topics.yaml"
    bad.write_text("topics:\n  x:\n    partitions: 1\n    config: {}\n    writers: [orchestratr]\n")
    with pytest.raises(ValueError, match="orchestratr"):
        load_topics("x", bad)
