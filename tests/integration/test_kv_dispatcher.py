"""The KV-affinity dispatcher: one run through the real processor on the real broker with two
replica emulator processes (the pure policies, the replay and the metrics parser:
tests/unit/test_kv_dispatcher_core.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from agentstream import ids
from agentstream.codec import AvroCodec
from agentstream.config import Settings
from agentstream.credentials.signing_keys import component_keyring
from agentstream.events import (
    LlmCallCompleted,
    LlmCallDispatched,
    LlmCallRequested,
    RunEvent,
)
from agentstream.kafka.consumer import consumer_config
from agentstream.kafka.journal import RecordFactory
from agentstream.kafka.producer import AsyncProducer, producer_config
from agentstream.process import serve
from agentstream.processors.kv_dispatcher.app import build
from agentstream.security.journal_trust import JournalSigner, stand_in_writer
from agentstream.settings import KvSettings
from agentstream.topics import JOURNAL, load_topics
from tests.harness import emulator_processes
from tests.unit.test_kv_dispatcher_core import journal

# -- the pure policy ------------------------------------------------------------------------------


# -- the core: replay rebuilds the state ------------------------------------------------------------


# -- the prober's parser -----------------------------------------------------------------------------


# -- through the real processor on the real broker ------------------------------------------------


@pytest.fixture
def emulators() -> Iterator[list[str]]:
    with emulator_processes(2) as urls:
        yield list(urls.values())


@pytest.fixture
async def kv_dispatcher(settings: Settings, emulators: list[str]) -> AsyncIterator[None]:
    kv = KvSettings(replicas={f"r{i}": u for i, u in enumerate(emulators)}, policy="agentstream")
    stop = asyncio.Event()
    task = asyncio.create_task(serve(build, dataclasses.replace(settings, kv=kv), "t0", stop))
    yield
    stop.set()
    await asyncio.wait_for(task, 30)


def next_dispatch(consumer: Consumer, call_id: str, timeout_s: float = 20) -> LlmCallDispatched:
    codec, deadline = AvroCodec(), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for msg in consumer.consume(100, 0.1):
            event = codec.decode(msg.value()) if msg.error() is None else None
            if isinstance(event, LlmCallDispatched) and event.call_id == call_id:
                return event
    raise TimeoutError(f"no dispatch for {call_id}")


async def test_a_runs_turns_land_on_one_replica_and_hit_its_cache(settings: Settings, kv_dispatcher: None) -> None:
    topic = load_topics(settings.topic_prefix)[JOURNAL].name
    # The test stands in for the orchestrator and the model invoker: it signs as they would.
    signer = JournalSigner("admin", component_keyring(settings, "admin"))
    records = RecordFactory(AvroCodec(), topic, load_topics(settings.topic_prefix)[JOURNAL].partitions, signer)
    producer = AsyncProducer(producer_config(settings.bootstrap_servers, settings.kafka_extra))
    consumer = Consumer(consumer_config(settings.bootstrap_servers, settings.kafka_extra, {"group.id": "t"}))
    md = consumer.list_topics(topic, timeout=10)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.topics[topic].partitions])

    async def send(event: RunEvent) -> None:
        r = records.journal(event, as_writer=stand_in_writer(event.type_name))
        await producer.send(r.topic, r.value, key=r.key, partition=r.partition, headers=r.headers)

    run, chosen, context = "kvrun1", [], "You are a helpful agent. " * 200
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            for step, event in enumerate(e for e in journal(run, 3) if isinstance(e, LlmCallRequested)):
                await send(event)
                dispatched = await asyncio.to_thread(next_dispatch, consumer, event.call_id)
                chosen.append(dispatched)
                context += f"turn {step}: " + "tool output " * 100
                body = {"model": "m", "max_tokens": 20, "user": run, "messages": [{"role": "user", "content": context}]}
                usage = (await http.post(f"{dispatched.url}/v1/chat/completions", json=body)).json()["usage"]
                call = event.call_id
                await send(LlmCallCompleted(ids.completed_event_id(call), run, "t", event.step, call, "emu", "m", "",
                                            "[]", "length", usage["prompt_tokens"], 20, 0, 1.0, 1))  # fmt: skip
            stats = (await http.get(f"{chosen[0].url}/_emulator/stats")).json()["counters"]
    finally:
        consumer.close()
        await producer.aclose()
    assert len({d.replica for d in chosen}) == 1
    assert all(d.reason.startswith("pinned to") for d in chosen[1:]) and chosen[0].policy == "agentstream"
    assert stats["hits"] == 2 and stats["cached_tokens"] > 0
