"""`topics.yaml` as code: load the declared topics, create what is missing, report drift."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic  # type: ignore[attr-defined]

from agentstream.kafka.auth import COMPONENTS
from agentstream.resources import resource_path
from agentstream.settings import ResourceSettings, once

JOURNAL = "runs.journal"
CATALOG = "tools.catalog"
STATUS = "processors.status"
DEADLETTER = "deadletter"
CONTROL = "control"
REPLICAS = "replicas.status"
RUN_INDEX = "runs.index"
CHECKPOINTS = "gateway.checkpoints"


# What a topic gets on a cluster of at least this many brokers unless topics.yaml says otherwise.
DEFAULT_REPLICATION = 3


def min_insync_for(replication_factor: int) -> int:
    """Writes (acks=all) go on with one replica lost: two of three in sync, one of one or two."""
    return max(1, min(2, replication_factor - 1))


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str]
    writers: tuple[str, ...]
    # Components that consume it; with `writers`, the source of the broker's ACLs (kafka/acls.py).
    readers: tuple[str, ...] = ()

    def replicas_on(self, brokers: int) -> int:
        """The replication factor on a cluster of `brokers`: as declared, at most one per broker."""
        return max(1, min(self.replication_factor, brokers))

    def config_at(self, replicas: int) -> dict[str, str]:
        """The topic's config at a replication factor: `min.insync.replicas` follows from it
        unless topics.yaml sets it (never above the factor, or no acks=all write could succeed)."""
        declared = self.config.get("min.insync.replicas")
        isr = min(int(declared), replicas) if declared is not None else min_insync_for(replicas)
        return {**self.config, "min.insync.replicas": str(isr)}


def default_topics_file() -> Path:
    return once(ResourceSettings).topics_file or resource_path("topics.yaml")


def load_topics(prefix: str, path: Path | None = None) -> dict[str, TopicSpec]:
    """Maps the short name (e.g. "runs.journal") to the full spec with the prefixed name."""
    raw: dict[str, Any] = yaml.safe_load((path or default_topics_file()).read_text())
    specs: dict[str, TopicSpec] = {}
    for short, body in raw["topics"].items():
        # They become the broker's ACLs: a misspelt name would grant nothing, or a stranger.
        unknown = sorted({*(body.get("writers") or ()), *(body.get("readers") or ())} - set(COMPONENTS))
        if unknown:
            raise ValueError(f"topic {short}: writers/readers {unknown} are not components {list(COMPONENTS)}")
        specs[short] = TopicSpec(
            name=f"{prefix}.{short}",
            partitions=int(body["partitions"]),
            replication_factor=int(body.get("replication_factor", DEFAULT_REPLICATION)),
            config={str(k): str(v) for k, v in (body.get("config") or {}).items()},
            writers=tuple(body.get("writers") or ()),
            readers=tuple(body.get("readers") or ()),
        )
    return specs


@dataclass(frozen=True)
class Drift:
    topic: str
    what: str
    expected: str
    actual: str

    def __str__(self) -> str:
        return f"{self.topic}: {self.what} expected {self.expected!r}, found {self.actual!r}"


def _admin(bootstrap: str, extra: dict[str, str] | None = None) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, **(extra or {})})


def _create_sync(bootstrap: str, specs: list[TopicSpec], extra: dict[str, str] | None) -> list[str]:
    admin = _admin(bootstrap, extra)
    metadata = admin.list_topics(timeout=15)
    missing = [s for s in specs if s.name not in metadata.topics]
    if not missing:
        return []
    brokers = len(metadata.brokers)
    futures = admin.create_topics(
        [NewTopic(s.name, s.partitions, s.replicas_on(brokers), config=s.config_at(s.replicas_on(brokers)))
         for s in missing],
        operation_timeout=30,
    )  # fmt: skip
    created = []
    for name, fut in futures.items():
        try:
            fut.result()
            created.append(name)
        except KafkaException as exc:
            # A concurrent creator won the race: the topic exists, which is what we wanted.
            if exc.args[0].code() != 36:  # TOPIC_ALREADY_EXISTS
                raise
    return created


def _verify_sync(bootstrap: str, specs: list[TopicSpec], extra: dict[str, str] | None) -> list[Drift]:
    admin = _admin(bootstrap, extra)
    cluster = admin.list_topics(timeout=15)
    metadata = cluster.topics
    drift: list[Drift] = []
    present = [s for s in specs if s.name in metadata]
    replicas: dict[str, int] = {}
    for spec in specs:
        if spec.name not in metadata:
            drift.append(Drift(spec.name, "existence", "present", "missing"))
            continue
        partitions = metadata[spec.name].partitions
        if len(partitions) != spec.partitions:
            drift.append(Drift(spec.name, "partitions", str(spec.partitions), str(len(partitions))))
        replicas[spec.name] = min(len(p.replicas) for p in partitions.values())
        # Metadata lists live brokers only: with one down, a topic still holds the replicas it got.
        wanted = spec.replicas_on(len(cluster.brokers))
        if not wanted <= replicas[spec.name] <= spec.replication_factor:
            drift.append(Drift(spec.name, "replication.factor", str(wanted), str(replicas[spec.name])))
    if present:
        resources = [ConfigResource(ConfigResource.Type.TOPIC, s.name) for s in present]
        for resource, fut in admin.describe_configs(resources).items():
            spec = next(s for s in present if s.name == resource.name)
            actual = {k: v.value for k, v in fut.result().items()}
            for key, expected in spec.config_at(replicas[spec.name]).items():
                if str(actual.get(key)) != expected:
                    drift.append(Drift(spec.name, key, expected, str(actual.get(key))))
    return drift


async def create_topics(bootstrap: str, specs: list[TopicSpec], extra: dict[str, str] | None = None) -> list[str]:
    """Creates the missing topics; existing ones are left alone (run `verify` to see drift)."""
    return await asyncio.to_thread(_create_sync, bootstrap, specs, extra)


async def verify_topics(bootstrap: str, specs: list[TopicSpec], extra: dict[str, str] | None = None) -> list[Drift]:
    return await asyncio.to_thread(_verify_sync, bootstrap, specs, extra)
