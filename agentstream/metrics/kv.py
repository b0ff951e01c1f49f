"""The KV-affinity dispatcher's metrics and its prober's, read from their state when scraped:
calls waiting and in flight, pinned sessions, dispatch outcomes, prefix-cache hits and misses of
pinned sessions (the hit rate: hits / (hits + misses)), and what each replica last reported.
Replica names come from the operator's AGENTSTREAM_REPLICAS: a bounded label."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from agentstream.metrics.endpoint import ReadWhenScraped

if TYPE_CHECKING:
    from agentstream.processors.kv_dispatcher.prober import Prober
    from agentstream.processors.kv_dispatcher.state import DispatchState


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, value=value)


class DispatcherCollector(ReadWhenScraped):
    def __init__(self, state: DispatchState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        st, c = self.state, self.state.counters
        yield _gauge("agentstream_kv_dispatch_queue_calls", "Model calls waiting for room on a replica", len(st.queue))
        yield _gauge(
            "agentstream_kv_dispatch_in_flight_calls", "Model calls dispatched and not finished", len(st.calls)
        )
        yield _gauge("agentstream_kv_dispatch_pinned_sessions", "Sessions pinned to a replica", len(st.pins))
        outcomes = CounterMetricFamily("agentstream_kv_dispatch_decisions", "Dispatcher decisions, by outcome",
                                       labels=["outcome"])  # fmt: skip
        for outcome in ("dispatched", "queued", "rejected", "evicted", "overcommitted", "expired", "replaced"):
            outcomes.add_metric([outcome], getattr(c, outcome))
        yield outcomes
        cache = CounterMetricFamily(
            "agentstream_kv_prefix_cache_turns",
            "Turns of pinned sessions by whether the replica still held their context (hit rate: hit / all)",
            labels=["result"],
        )
        cache.add_metric(["hit"], c.cache_hits)
        cache.add_metric(["miss"], c.cache_misses)
        yield cache
        room = GaugeMetricFamily("agentstream_kv_replica_room_factor",
                                 "The eviction guard's share of each replica's KV the dispatcher fills",
                                 labels=["replica"])  # fmt: skip
        for replica in sorted(st.replicas):
            room.add_metric([replica], st.room_factor.get(replica, 1.0))
        yield room


class ProberCollector(ReadWhenScraped):
    def __init__(self, prober: Prober) -> None:
        self.prober = prober

    def collect(self) -> Iterator[Metric]:
        prober = self.prober
        probes = CounterMetricFamily("agentstream_kv_replica_probes", "Replica probes, by replica and health",
                                     labels=["replica", "healthy"])  # fmt: skip
        for (replica, healthy), count in sorted(prober.outcomes.items()):
            probes.add_metric([replica, "true" if healthy else "false"], count)
        yield probes
        yield _gauge("agentstream_kv_probe_round_seconds", "How long the last round of probes took", prober.round_s)
        up = GaugeMetricFamily("agentstream_kv_replica_up", "1: the replica's last probe found it healthy",
                               labels=["replica"])  # fmt: skip
        kv = GaugeMetricFamily("agentstream_kv_replica_kv_usage_ratio", "KV cache in use, as the replica reports it",
                               labels=["replica"])  # fmt: skip
        requests = GaugeMetricFamily("agentstream_kv_replica_requests", "Requests the replica reports, by state",
                                     labels=["replica", "state"])  # fmt: skip
        for name, status in sorted(prober.last.items()):
            up.add_metric([name], 1.0 if status.healthy else 0.0)
            capacity = status.kv_capacity_tokens
            kv.add_metric([name], status.kv_used_tokens / capacity if capacity else 0.0)
            requests.add_metric([name, "running"], status.running)
            requests.add_metric([name, "waiting"], status.waiting)
        yield from (up, kv, requests)
