"""Bad input on the journal: poison events go to the dead-letter topic with a reason, and the
processor loop keeps serving good events (real broker, orchestrator running in-process)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from agentstream.client.journal import JournalClient, RunRequest
from agentstream.codec import AvroCodec
from agentstream.config import Settings
from agentstream.credentials.signing_keys import component_keyring
from agentstream.events import RunFailed
from agentstream.kafka.journal import header_pairs
from agentstream.kafka.partitioner import partition_for
from agentstream.process import serve
from agentstream.processors.orchestrator.app import build as build_orchestrator
from agentstream.security.journal_trust import JournalSigner
from agentstream.topics import DEADLETTER, JOURNAL, load_topics
from tests.kafkahelpers import produce_raw, read_topic


@pytest.fixture
async def orchestrator(settings: Settings) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(serve(build_orchestrator, settings, "t0", stop))
    yield
    stop.set()
    await asyncio.wait_for(task, 30)


async def test_poison_events_are_dead_lettered_and_the_loop_goes_on(settings: Settings, orchestrator: None) -> None:
    topics = load_topics(settings.topic_prefix)
    journal = topics[JOURNAL].name
    # Signed by writers allowed to write them (the test holds the operator's keys), so the
    # decoder, not the writer check, is what refuses the first two.
    signer = JournalSigner("admin", component_keyring(settings, "admin"))
    k1 = [("type", b"RunRequested"), *signer.headers(journal, b"k1", "RunRequested", b"\x00garbage")]
    k2 = [("type", b"RunStarted"), *signer.headers(journal, b"k2", "RunStarted", b"", as_writer="orchestrator")]
    produce_raw(settings.bootstrap_servers, journal, b"\x00garbage", b"k1", list(k1), partition=0)
    produce_raw(settings.bootstrap_servers, journal, None, b"k2", list(k2), partition=1)
    produce_raw(settings.bootstrap_servers, journal, b'{"run_id": "x"}', b"k3", None, partition=2)

    client = JournalClient(settings)
    try:
        run_id = await client.request_run(RunRequest(task="t", tools=["no_such_tool"]))
        events = [e.event async for e in client.follow(run_id, timeout_s=30)]
    finally:
        await client.aclose()
    assert isinstance(events[-1], RunFailed) and "no_such_tool" in events[-1].reason

    dead = await read_topic(settings.bootstrap_servers, topics[DEADLETTER].name, min_count=3)
    by_key = {m.key(): dict(header_pairs(m)) for m in dead}
    assert set(by_key) == {b"k1", b"k2", b"k3"}
    assert b"bad magic" in by_key[b"k1"]["reason"]
    assert b"tombstone" in by_key[b"k2"]["reason"]
    assert b"unsigned" in by_key[b"k3"]["reason"]  # no type, no writer: refused before decoding
    assert by_key[b"k1"]["processor"] == b"orchestrator"
    assert by_key[b"k1"]["source-topic"] == journal.encode()
    assert by_key[b"k1"]["original-type"] == b"RunRequested"
    original = next(m for m in dead if m.key() == b"k1")
    assert original.value() == b"\x00garbage"  # nothing lost: the original bytes are kept


async def test_an_event_planted_in_another_runs_partition_is_dead_lettered(
    settings: Settings, orchestrator: None
) -> None:
    """A genuine event copied into a partition its run does not live in is not applied there: each
    partition's state is its runs' only record, and a second copy elsewhere could act twice."""
    topics = load_topics(settings.topic_prefix)
    journal = topics[JOURNAL].name
    client = JournalClient(settings)
    try:
        run_id = await client.request_run(RunRequest(task="t", tools=["no_such_tool"]))
        events = [e async for e in client.follow(run_id, timeout_s=30)]
    finally:
        await client.aclose()
    requested = next(e for e in events if e.event.type_name == "RunRequested")
    home = partition_for(run_id, topics[JOURNAL].partitions)
    elsewhere = (home + 1) % topics[JOURNAL].partitions
    codec = AvroCodec()
    # A genuine, correctly signed copy (with its run proof): only the partition gives it away.
    value = codec.encode(requested.event)
    signer = JournalSigner("admin", component_keyring(settings, "admin"))
    headers = [("type", b"RunRequested"), *signer.headers(journal, b"planted", "RunRequested", value),
               signer.run_proof(requested.event.tenant_id, run_id, value)]  # fmt: skip
    produce_raw(settings.bootstrap_servers, journal, value, b"planted", list(headers), partition=elsewhere)

    dead = await read_topic(settings.bootstrap_servers, topics[DEADLETTER].name, min_count=1)
    reasons = {m.key(): dict(header_pairs(m))["reason"] for m in dead}
    assert f"partition {elsewhere}, not its run's partition {home}".encode() in reasons[b"planted"]
