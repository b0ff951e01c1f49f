"""The processes of `bench/kv_dispatch.py`: the replica emulators and the dispatcher under test, and
a reader of the topics they write."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from agentstream.codec import AvroCodec
from agentstream.config import Settings
from agentstream.doubles.replica_emulator.profile import DEFAULT_8B_H100
from agentstream.events import ProcessorStatus
from agentstream.kafka.auth import CREDENTIALS_DIR_ENV, with_principal
from agentstream.kafka.consumer import consumer_config, fetch_batch
from agentstream.kafka.journal import TYPE_HEADER, header_pairs
from agentstream.topics import STATUS, load_topics

ROOT = Path(__file__).resolve().parents[1]


def log(msg: str) -> None:
    print(f"[kv-dispatch {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Fleet:
    """The replica emulators and the dispatcher: child processes, every one killed on the way out."""

    count: int
    kv_tokens: int
    log_dir: Path
    max_queue_wait_s: float = 0.0  # emulated; 0: a new session waits until there is room
    prefill_chunk_tokens: int = DEFAULT_8B_H100.prefill_chunk_tokens  # 0: prefill never slows decodes
    emulators: list[subprocess.Popen[bytes]] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    infinite: bool = False
    time_scale: float = 0.0  # the emulators' (each policy may run at its own)
    dispatcher: subprocess.Popen[bytes] | None = None

    def start_emulators(self, infinite: bool, time_scale: float) -> None:
        self.stop_emulators()
        self.infinite, self.time_scale = infinite, time_scale
        for i in range(self.count):  # all started before any is waited for: they import in parallel
            cmd = [sys.executable, "-m", "agentstream.doubles.replica_emulator", "--port", "0", "--replica-id", f"r{i}",
                   "--kv-tokens", str(self.kv_tokens), "--time-scale", str(time_scale),
                   "--prefill-chunk-tokens", str(self.prefill_chunk_tokens)]  # fmt: skip
            proc = subprocess.Popen([*cmd, *(["--infinite-kv"] if infinite else [])], stdout=subprocess.PIPE,
                                    stdin=subprocess.DEVNULL, cwd=ROOT, start_new_session=True)  # fmt: skip
            self.emulators.append(proc)
        for i, proc in enumerate(self.emulators):
            assert proc.stdout is not None
            line = proc.stdout.readline().decode().strip()
            if not line.startswith("ready "):
                raise RuntimeError(f"emulator r{i} did not start: {line!r}")
            self.urls.append(line.split(" ", 1)[1])

    def start_dispatcher(self, settings: Settings, policy: str) -> None:
        env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
                   AGENTSTREAM_KV_PIN_TTL_S=str(30 * self.time_scale),
                   AGENTSTREAM_KV_MAX_QUEUE_WAIT_S=str(self.max_queue_wait_s * self.time_scale),
                   AGENTSTREAM_TOPIC_PREFIX=settings.topic_prefix, AGENTSTREAM_HOME=str(settings.home),
                   AGENTSTREAM_KV_POLICY=policy, AGENTSTREAM_LOG_LEVEL=os.environ.get("AGENTSTREAM_LOG_LEVEL", "WARNING"),
                   AGENTSTREAM_REPLICAS=",".join(f"r{i}={u}" for i, u in enumerate(self.urls)))  # fmt: skip
        if settings.kafka_credentials_dir is not None:  # the dispatcher's own principal, not the driver's
            env = with_principal({**env, CREDENTIALS_DIR_ENV: str(settings.kafka_credentials_dir)}, "kv-dispatcher")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"kv-dispatcher-{policy}.log", "ab") as out:
            self.dispatcher = subprocess.Popen(
                [sys.executable, "-m", "agentstream.processors.kv_dispatcher.app"], env=env, stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT, start_new_session=True,
            )  # fmt: skip

    def stop_dispatcher(self) -> None:
        if self.dispatcher is not None:
            _stop(self.dispatcher)
            self.dispatcher = None

    def stop_emulators(self) -> None:
        for proc in self.emulators:
            _stop(proc)
        self.emulators, self.urls = [], []

    def close(self) -> None:
        self.stop_dispatcher()
        self.stop_emulators()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def wait_dispatcher_ready(settings: Settings, partitions: int, fleet: Fleet, timeout_s: float = 90) -> None:
    """Until the dispatcher's status says it owns every journal partition and is live."""
    topic = load_topics(settings.topic_prefix)[STATUS].name
    deadline = time.monotonic() + timeout_s
    with journal_reader(settings, topic, {ProcessorStatus.type_name}) as events:
        while time.monotonic() < deadline:
            if fleet.dispatcher is None or fleet.dispatcher.poll() is not None:
                raise RuntimeError("the dispatcher process exited; see its log under the bench home")
            for event in await asyncio.to_thread(events, 0.5):
                mine = isinstance(event, ProcessorStatus) and event.processor == "kv-dispatcher"
                if mine and len(event.partitions) == partitions and event.state == "running":
                    return
    raise TimeoutError("the dispatcher never became ready")


@contextlib.contextmanager
def journal_reader(settings: Settings, topic: str, types: set[str]) -> Iterator[Callable[[float], list[Any]]]:
    consumer = Consumer(consumer_config(settings.bootstrap_servers, settings.kafka_extra, {"group.id": "kv-bench"}))
    md = consumer.list_topics(topic, timeout=10)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.topics[topic].partitions])
    codec = AvroCodec()

    def read(timeout_s: float) -> list[Any]:
        out = []
        for msg in fetch_batch(consumer, 1000, timeout_s):  # returns as soon as anything arrived
            if msg.error() is None and dict(header_pairs(msg)).get(TYPE_HEADER, b"").decode() in types:
                out.append(codec.decode(msg.value()))
        return out

    try:
        yield read
    finally:
        consumer.close()
