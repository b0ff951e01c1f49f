"""Tails the journal and notes which runs have ended, so a benchmark can wait without polling runs one by one."""

from __future__ import annotations

import asyncio
import threading
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from agentstream.config import Settings
from agentstream.events import TERMINAL_TYPES
from agentstream.kafka.consumer import consumer_config, fetch_batch
from agentstream.kafka.journal import header_pairs
from agentstream.topics import JOURNAL, load_topics


class TerminalWatcher:
    """`ends`: the event types that end a run for the caller (a bench that never resumes a run
    adds RunHalted: a halted run waits for a person, not for the timeout)."""

    def __init__(self, settings: Settings, ends: frozenset[str] = TERMINAL_TYPES) -> None:
        self.ended: dict[str, str] = {}
        self._ends = ends
        self._topic = load_topics(settings.topic_prefix)[JOURNAL].name
        self._bootstrap = settings.bootstrap_servers
        self._extra = settings.kafka_extra
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        consumer = Consumer(consumer_config(self._bootstrap, self._extra, {"group.id": "bench-watch"}))
        md = consumer.list_topics(self._topic, timeout=10)
        consumer.assign([TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in md.topics[self._topic].partitions])
        while not self._stop.is_set():
            for msg in fetch_batch(consumer, 1000, 0.2):
                if msg.error() is not None:
                    continue
                self.on_message(msg)
        consumer.close()

    def on_message(self, msg: Message) -> None:
        """Each journal record, in order (a subclass may read more of it)."""
        for name, value in header_pairs(msg):
            if name == "type" and value.decode() in self._ends:
                key = (msg.key() or b"").decode()
                self.ended[key.split("/", 1)[0]] = value.decode()

    async def wait(self, run_ids: set[str], timeout_s: float) -> set[str]:
        """Returns the runs still not ended when everything ended or the timeout passed."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            missing = run_ids - set(self.ended)
            if not missing:
                return set()
            await asyncio.sleep(0.25)
        return run_ids - set(self.ended)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
