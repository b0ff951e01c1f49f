"""`agentstream kafka start|stop|status [--brokers N]`: the embedded broker or the local cluster."""

from __future__ import annotations

import sys
import time

from agentstream.config import Settings
from agentstream.localcluster import LocalCluster, cluster_dir
from agentstream.localkafka import LocalKafka, LocalKafkaError


async def kafka_command(settings: Settings, action: str, brokers: int = 1) -> int:
    single = LocalKafka(settings.home / "kafka", credentials_dir=settings.kafka_credentials_dir)
    try:
        cluster = LocalCluster.existing(cluster_dir(settings.home), settings.kafka_credentials_dir)
        if action == "start":
            return await _start(settings, single, cluster, brokers)
    except LocalKafkaError as exc:
        print(f"agentstream kafka {action}: {exc}", file=sys.stderr)
        return 1
    if action == "stop":
        await single.stop()
        if cluster is not None:
            await cluster.stop()
        print("local Kafka stopped")
        return 0
    ready = False
    if single.running_pid() is not None or cluster is None:
        ready = await single.is_ready(2.0)
        print(f"local Kafka at {single.bootstrap}: {'ready' if ready else 'not running'}")
    if cluster is not None:
        for node, running in zip(cluster.nodes, cluster.running(), strict=True):
            up = running and await node.is_ready(2.0)
            ready = ready or up
            print(f"local Kafka cluster node {node.node_id} at {node.bootstrap}: {'ready' if up else 'not running'}")
    return 0 if ready else 1


async def _start(settings: Settings, single: LocalKafka, cluster: LocalCluster | None, brokers: int) -> int:
    t0 = time.monotonic()
    if brokers < 1:
        raise LocalKafkaError("--brokers must be at least 1")
    if brokers == 1:
        if cluster is not None and any(cluster.running()):
            raise LocalKafkaError(
                f"a local cluster of {cluster.brokers} brokers is running at {cluster.bootstrap}: "
                "`agentstream kafka stop` it first, or start it with --brokers " + str(cluster.brokers)
            )
        await single.start()
        print(f"local Kafka ready at {single.bootstrap} in {time.monotonic() - t0:.1f}s (data: {single.data_dir})")
        return 0
    if single.running_pid() is not None:
        raise LocalKafkaError(
            f"the single local broker is running at {single.bootstrap}: `agentstream kafka stop` first"
        )
    cluster = cluster or LocalCluster(
        cluster_dir(settings.home), brokers, credentials_dir=settings.kafka_credentials_dir
    )
    if cluster.brokers != brokers:
        raise LocalKafkaError(
            f"the local cluster in {cluster.data_dir} has {cluster.brokers} brokers: stop it and remove that "
            f"directory to start one of {brokers}"
        )
    await cluster.start()
    print(f"local Kafka cluster of {brokers} brokers ready at {cluster.bootstrap} in {time.monotonic() - t0:.1f}s "
          f"(data: {cluster.data_dir}); topics get {min(3, brokers)} replicas, producers write with acks=all")  # fmt: skip
    return 0
