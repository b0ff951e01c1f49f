"""A replicated local Kafka: `agentstream kafka start --brokers 3`, from the single broker's jars.

Each node is a combined broker+controller (a `LocalKafka` with its own node id) in a static
three-voter KRaft quorum: three JVMs instead of six on a small machine, and a quorum of three
survives the loss of one node, which is the failure this cluster exists to exercise. A killed node
takes a broker and a controller voter down together; when it was the active controller, a new one
is elected while its partitions fail over, the harder of the two cases.

Security is the single broker's: every node authenticates clients with SCRAM-SHA-512, talks to the
others as the broker principal and authorizes with ACLs. All nodes share one credential store.

The layout (broker count, ports, cluster id) is written to `cluster.json` on first start, so later
starts, `kafka stop` and `kafka status` find the same cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from agentstream.kafka.auth import COMPONENTS, CredentialStore, upsert_users
from agentstream.localkafka import LocalKafka, LocalKafkaError, free_port, new_cluster_id

LAYOUT = "cluster.json"
# The first node listens where the single broker does (config.LOCAL_BOOTSTRAP), so one-off CLI
# commands reach the cluster while node 1 is up; the others take the next port pairs.
DEFAULT_BASE_PORT = 19092


def cluster_dir(home: Path) -> Path:
    return home / "kafka-cluster"


@dataclass
class LocalCluster:
    data_dir: Path
    brokers: int = 3
    # (client port, controller port) per node; None: 19092/19093, 19094/19095, ... for the CLI's
    # cluster, or free ports when `free_ports` (tests, benchmarks).
    ports: list[tuple[int, int]] | None = None
    free_ports: bool = False
    credentials_dir: Path | None = None
    # Three JVMs on a two-core machine: small heaps (each node holds little: the journal is on disk).
    heap: str = "384m"
    nodes: list[LocalKafka] = field(init=False)
    cluster_id: str = field(init=False)

    def __post_init__(self) -> None:
        layout = self.data_dir / LAYOUT
        if layout.exists():
            saved: dict[str, Any] = json.loads(layout.read_text())
            if saved["brokers"] != self.brokers:
                raise LocalKafkaError(
                    f"the local cluster in {self.data_dir} has {saved['brokers']} brokers, not {self.brokers}: "
                    "stop it and remove that directory to change its size"
                )
            self.ports = [(int(a), int(b)) for a, b in saved["ports"]]
            self.cluster_id = str(saved["cluster_id"])
        else:
            if self.ports is None:
                base = DEFAULT_BASE_PORT
                self.ports = (
                    [(free_port(), free_port()) for _ in range(self.brokers)]
                    if self.free_ports
                    else [(base + 2 * i, base + 2 * i + 1) for i in range(self.brokers)]
                )
            self.cluster_id = new_cluster_id()
        if len(self.ports) != self.brokers:
            raise LocalKafkaError(f"{self.brokers} brokers need {self.brokers} port pairs, got {len(self.ports)}")
        voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, (_, c) in enumerate(self.ports))
        creds = self.credentials_dir or self.data_dir.parent / "keys" / "kafka"
        self.nodes = [
            LocalKafka(self.data_dir / f"node-{i + 1}", port=p, controller_port=c, heap=self.heap,
                       initial_heap="128m", credentials_dir=creds, node_id=i + 1, voters=voters,
                       cluster_id=self.cluster_id, replication=self.brokers)
            for i, (p, c) in enumerate(self.ports)
        ]  # fmt: skip

    @staticmethod
    def existing(data_dir: Path, credentials_dir: Path | None = None) -> LocalCluster | None:
        """The cluster laid out in `data_dir`, or None where `kafka start --brokers N` never ran."""
        layout = data_dir / LAYOUT
        if not layout.exists():
            return None
        brokers = int(json.loads(layout.read_text())["brokers"])
        return LocalCluster(data_dir, brokers, credentials_dir=credentials_dir)

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes)

    @property
    def credentials(self) -> CredentialStore:
        return self.nodes[0].credentials

    def admin_config(self) -> dict[str, str]:
        return self.nodes[0].admin_config()

    def running(self) -> list[bool]:
        return [n.running_pid() is not None for n in self.nodes]

    async def start(self, timeout_s: float = 120.0) -> None:
        """Starts every node that is not running and waits until each sees the whole cluster."""
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        down = [n for n in self.nodes if n.running_pid() is None]
        # Every node is spawned before any is waited for: none answers until a quorum has formed.
        for node in down:
            await node.spawn(await node.prepare(timeout_s))
        layout = {"brokers": self.brokers, "ports": self.ports, "cluster_id": self.cluster_id}
        (self.data_dir / LAYOUT).write_text(json.dumps(layout) + "\n")
        auth = self.admin_config()
        await asyncio.gather(*(n.wait_answers(auth, timeout_s, self.brokers) for n in down))
        await upsert_users(self.bootstrap, auth, self.credentials.ensure_all(COMPONENTS))

    async def stop(self) -> None:
        await asyncio.gather(*(n.stop() for n in self.nodes))

    async def kill(self, index: int) -> None:
        """SIGKILLs node `index` (0-based): a crash, with no controlled shutdown."""
        await self.nodes[index].kill()

    async def stop_node(self, index: int) -> None:
        await self.nodes[index].stop()

    async def start_node(self, index: int, timeout_s: float = 120.0) -> None:
        """Restarts one node; returns once it is registered with the others again."""
        node = self.nodes[index]
        if node.running_pid() is not None:
            return
        await node.spawn(await node.prepare(timeout_s))
        await node.wait_answers(self.admin_config(), timeout_s, self.brokers)

    async def restart(self, index: int, down_s: float = 0.0, timeout_s: float = 120.0) -> None:
        await self.kill(index)
        await asyncio.sleep(down_s)
        await self.start_node(index, timeout_s)

    async def leader_of_most(self, topic: str) -> int:
        """The index of the node that leads the most partitions of `topic`."""
        return await leader_of_most(self.bootstrap, self.admin_config(), topic)

    async def wait_in_sync(self, timeout_s: float = 120.0) -> None:
        """Until every partition has all its replicas in sync (a restarted node has caught up)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not await asyncio.to_thread(_under_replicated, self.bootstrap, self.admin_config()):
                return
            await asyncio.sleep(0.5)
        raise LocalKafkaError(f"partitions still under-replicated after {timeout_s:.0f}s")


def _metadata(bootstrap: str, auth: dict[str, str], topic: str | None = None) -> Any:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": "0", **auth})
    return admin.list_topics(topic, timeout=15)


def _under_replicated(bootstrap: str, auth: dict[str, str]) -> bool:
    topics = _metadata(bootstrap, auth).topics.values()
    return any(len(p.isrs) < len(p.replicas) for t in topics for p in t.partitions.values())


async def leader_of_most(bootstrap: str, auth: dict[str, str], topic: str) -> int:
    """The 0-based index (node id - 1) of the broker leading the most partitions of `topic`."""

    def count() -> int:
        partitions = _metadata(bootstrap, auth, topic).topics[topic].partitions.values()
        leaders = Counter(p.leader for p in partitions if p.leader >= 0)
        if not leaders:
            raise LocalKafkaError(f"no partition of {topic} has a leader")
        return int(leaders.most_common(1)[0][0]) - 1

    return await asyncio.to_thread(count)


async def supervise(
    nodes: list[LocalKafka], stop: asyncio.Event, say: Callable[[str], None], interval_s: float = 1.0
) -> None:
    """Restarts any of `nodes` whose process died, until `stop`: what `agentstream dev` runs for the
    broker it uses. One line per state change: down, back, and each new reason a restart failed."""
    failing: dict[int, str] = {}
    while not stop.is_set():
        for i, node in enumerate(nodes):
            name = f"Kafka broker {node.node_id} ({node.bootstrap})"
            if node.running_pid() is not None:
                if i in failing and await node.is_ready(1.0):
                    del failing[i]
                    say(f"{name} is back")
                continue
            if i not in failing:
                say(f"{name} exited; restarting it")
                failing[i] = ""
            try:
                await node.spawn(await node.prepare())
                await node.wait_answers(node.admin_config(), 120.0)
            except (LocalKafkaError, OSError) as exc:
                reason = str(exc).splitlines()[0]
                if failing[i] != reason:
                    say(f"{name} failed to restart, retrying: {reason}")
                    failing[i] = reason
                continue
            del failing[i]
            say(f"{name} is back")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
