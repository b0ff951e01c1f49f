"""The replicated local cluster (`agentstream kafka start --brokers 3`), for real: three KRaft
nodes from the same jars, SCRAM and ACLs as on the single broker. Topics get three replicas and
`min.insync.replicas=2`; acknowledged (acks=all) writes and a whole run survive a SIGKILL of the
broker leading most journal partitions. Marked `cluster`: three JVMs are a later test layer's
cost (`-m "not cluster"` leaves them out; the full suite runs them)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

from agentstream.cli.kafka import kafka_command
from agentstream.client.journal import RunRequest
from agentstream.config import ModelSettings, Settings
from agentstream.kafka.consumer import consumer_config, fetch_batch
from agentstream.kafka.partitioner import partition_for
from agentstream.kafka.producer import AsyncProducer, producer_config
from agentstream.localcluster import LocalCluster, cluster_dir
from agentstream.processors.tool_executor.builtin import bank_transfers
from agentstream.stack import AUTO_APPROVE_DEMO, Deployment, ensure_topics
from agentstream.topics import JOURNAL, load_topics, verify_topics
from agentstream.trajectory import summarize
from bench.scenarios import chaos_scenario, write_scenarios
from bench.watch import TerminalWatcher

# Kills and restarts brokers on a timing budget: run alone, after the parallel part (README).
pytestmark = pytest.mark.serial

TOOLS = ("calculator", "lookup", "transfer_funds", "convert_time")


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalCluster]:
    # Laid out as the CLI lays out `<home>`: the cluster beside the credentials in `<home>/keys/kafka`.
    home = tmp_path_factory.mktemp("cluster-home")
    local = LocalCluster(cluster_dir(home), 3, free_ports=True)
    await local.start()
    try:
        yield local
    finally:
        await local.stop()


@pytest.fixture
async def on_cluster(cluster: LocalCluster, tmp_path: Path) -> Settings:
    settings = Settings(
        bootstrap_servers=cluster.bootstrap,
        topic_prefix=f"c{uuid.uuid4().hex[:10]}",
        home=tmp_path / "home",
        model=ModelSettings(),
        kafka_extra=cluster.admin_config(),
        kafka_credentials_dir=cluster.credentials.directory,
    )
    settings.home.mkdir(parents=True)
    await ensure_topics(settings)
    return settings


@pytest.mark.cluster
async def test_topics_get_three_replicas_and_min_insync_two(on_cluster: Settings) -> None:
    specs = list(load_topics(on_cluster.topic_prefix).values())
    assert await verify_topics(on_cluster.bootstrap_servers, specs, on_cluster.kafka_extra) == []
    admin = AdminClient({"bootstrap.servers": on_cluster.bootstrap_servers, **on_cluster.kafka_extra})
    metadata = admin.list_topics(timeout=15).topics
    for spec in specs:
        assert {len(p.replicas) for p in metadata[spec.name].partitions.values()} == {3}, spec.name
    resources = [ConfigResource(ConfigResource.Type.TOPIC, s.name) for s in specs]
    for resource, future in admin.describe_configs(resources).items():
        assert future.result()["min.insync.replicas"].value == "2", resource.name
    assert len(metadata[f"{on_cluster.topic_prefix}.{JOURNAL}"].partitions) == 8


@pytest.mark.cluster
async def test_acknowledged_writes_survive_a_sigkilled_leader(cluster: LocalCluster, on_cluster: Settings) -> None:
    topic = load_topics(on_cluster.topic_prefix)[JOURNAL].name
    producer = AsyncProducer(producer_config(on_cluster.bootstrap_servers, on_cluster.kafka_extra))
    victim = await cluster.leader_of_most(topic)
    acked: set[bytes] = set()

    async def write(start: int, count: int) -> None:
        values = [f"record-{i}".encode() for i in range(start, start + count)]
        futures = [producer.send(topic, v, key=v) for v in values]
        for value, future in zip(values, futures, strict=True):
            await future  # raises if the write was not acknowledged by two in-sync replicas
            acked.add(value)

    await write(0, 500)
    writing = asyncio.create_task(write(500, 1500))
    await cluster.kill(victim)
    await writing  # the other two nodes take over the partitions the killed one led
    await asyncio.sleep(2)
    await cluster.start_node(victim)
    await cluster.wait_in_sync()
    await write(2000, 200)
    await producer.aclose()
    # Everything acknowledged is there, once: read it back from the cluster, the restarted node included.
    assert _read_all(on_cluster, topic) == sorted(acked) and len(acked) == 2200


def _read_all(settings: Settings, topic: str) -> list[bytes]:
    consumer = Consumer(consumer_config(settings.bootstrap_servers, settings.kafka_extra, {"group.id": "reader"}))
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    seen: list[bytes] = []
    positions = dict.fromkeys(partitions, 0)
    while any(positions[p] < ends[p] for p in partitions):
        for msg in fetch_batch(consumer, 1000, 1.0):
            if msg.error() is None:
                seen.append(msg.value() or b"")
                positions[msg.partition()] = (msg.offset() or 0) + 1
    consumer.close()
    return sorted(seen)


@pytest.mark.cluster
@pytest.mark.timeout(480)  # three JVMs and five processors on a small machine: the failure must be the assert
async def test_runs_complete_while_the_journal_leader_is_killed_and_restarted(
    cluster: LocalCluster, on_cluster: Settings
) -> None:
    scenarios = on_cluster.home / "scenarios"
    write_scenarios(scenarios, [chaos_scenario(k, 6) for k in range(4)])
    topic = load_topics(on_cluster.topic_prefix)[JOURNAL].name
    watcher = TerminalWatcher(on_cluster)
    try:
        async with Deployment(
            on_cluster, [scenarios], wait_tools=TOOLS, wait_tools_s=120, policies=AUTO_APPROVE_DEMO
        ) as deployment:
            runs = [
                await deployment.client.request_run(
                    RunRequest(task=f"[scenario:chaos{i % 4}] run {i}", tools=list(TOOLS), max_steps=12)
                )
                for i in range(12)
            ]
            await asyncio.sleep(1.0)  # runs in flight
            victim = await cluster.leader_of_most(topic)
            await cluster.kill(victim)
            await asyncio.sleep(3.0)
            await cluster.start_node(victim)
            stuck = await watcher.wait(set(runs), 180)
            assert stuck == set(), await _explain_stuck(deployment, on_cluster, stuck)
            assert deployment.procs is not None
            exited = deployment.procs.crashed()
            entries = {r: await deployment.client.read_run(r) for r in runs}
    finally:
        watcher.close()
    assert {r: summarize(e).status for r, e in entries.items()} == dict.fromkeys(runs, "completed")
    keys = [t["idempotency_key"] for t in bank_transfers(on_cluster.bank_path)]
    assert keys and len(keys) == len(set(keys)), "a transfer was applied twice"
    assert exited == [], f"processors exited during the broker failover: {exited}"


async def _explain_stuck(deployment: Deployment, settings: Settings, stuck: set[str]) -> str:
    """What a failure must say by itself: where each stuck run stopped (its last journaled events)
    and every processor's log (kept under the test's home/logs too)."""
    lines = [f"runs stuck after the failover: {sorted(stuck)}"]
    for run in sorted(stuck):
        try:
            entries = await asyncio.wait_for(deployment.client.read_run(run), 30)
        except Exception as exc:  # the explanation must not hide the failure it explains
            lines.append(f"{run}: journal not readable: {exc!r}")
            continue
        tail = ", ".join(f"{e.event.type_name}@{e.offset}" for e in entries[-4:])
        lines.append(f"{run} (p{partition_for(run, 8)}): {len(entries)} events, last: {tail}")
    for log in sorted((settings.home / "logs").glob("*.log")):
        lines += [f"----- {log.name} -----", *log.read_text(errors="replace").splitlines()[-60:]]
    return "\n".join(lines)


@pytest.mark.cluster
async def test_the_cli_stops_reports_and_restarts_the_cluster(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    # Last in this module: it stops the module's cluster and starts it again from its layout file.
    home = cluster.data_dir.parent
    settings = Settings(cluster.nodes[0].bootstrap, "x", home, ModelSettings(), kafka_extra={},
                        kafka_credentials_dir=home / "keys" / "kafka")  # fmt: skip
    assert await kafka_command(settings, "status") == 0
    assert capsys.readouterr().out.count("ready") == 3
    assert await kafka_command(settings, "start", brokers=1) == 1  # a single broker would clash
    assert "a local cluster of 3 brokers is running" in capsys.readouterr().err
    assert await kafka_command(settings, "stop") == 0
    assert cluster.running() == [False, False, False]
    assert await kafka_command(settings, "status") == 1
    assert await kafka_command(settings, "start", brokers=3) == 0
    assert "cluster of 3 brokers ready at " + cluster.bootstrap in capsys.readouterr().out
    assert cluster.running() == [True, True, True]
