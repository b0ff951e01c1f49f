"""topics.yaml against the real broker: idempotent create, verify reports drift, nothing auto-created."""

from __future__ import annotations

import asyncio

from agentstream.config import Settings
from agentstream.kafka.acls import acl_drift
from agentstream.stack import ensure_topics
from agentstream.topics import JOURNAL, load_topics, verify_topics
from tests.kafkahelpers import alter_topic_config


async def test_create_is_idempotent_and_verify_is_clean(settings: Settings) -> None:
    specs = list(load_topics(settings.topic_prefix).values())
    assert await ensure_topics(settings) == []  # the fixture created them; a second create is a no-op
    assert await verify_topics(settings.bootstrap_servers, specs, settings.kafka_extra) == []


async def test_verify_reports_config_drift_and_missing_topics(settings: Settings) -> None:
    topics = load_topics(settings.topic_prefix)
    journal = topics[JOURNAL]
    alter_topic_config(settings.bootstrap_servers, journal.name, "min.compaction.lag.ms", "1000")
    expected = [(journal.name, "min.compaction.lag.ms", "3600000", "1000")]
    # The controller acknowledges a create or a config change before the broker's metadata cache
    # has it: on a busy machine a describe right after can still show the topics missing or the old
    # value for a while.
    for _ in range(100):
        drift = [
            (d.topic, d.what, d.expected, d.actual)
            for d in await verify_topics(settings.bootstrap_servers, list(topics.values()), settings.kafka_extra)
        ]
        if drift == expected:
            break
        await asyncio.sleep(0.1)
    assert drift == expected
    other = load_topics("never-created")
    missing = await verify_topics(settings.bootstrap_servers, list(other.values()), settings.kafka_extra)
    assert {d.what for d in missing} == {"existence"} and len(missing) == len(other)


async def test_the_acls_topics_yaml_implies_are_on_the_broker(settings: Settings) -> None:
    topics = load_topics(settings.topic_prefix)
    assert await acl_drift(settings.bootstrap_servers, topics, settings.kafka_extra) == []
