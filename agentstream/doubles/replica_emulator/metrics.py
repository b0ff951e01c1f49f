"""vLLM's /metrics, under vLLM's metric names, so one prober reads vLLM and the emulator; the
exposition is prometheus_client's (as vLLM's own is).

Names and label sets follow vLLM's V1 metrics: gauges carry `model_name`, `cache_config_info` is an
info-style gauge whose labels are the cache config, and counters are exposed with the `_total`
suffix that prometheus_client appends.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from agentstream.doubles.replica_emulator.engine import ReplicaEngine
from agentstream.doubles.replica_emulator.profile import BLOCK_SIZE
from agentstream.metrics.endpoint import ReadWhenScraped

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


class EngineCollector(ReadWhenScraped):
    """The engine's state, read when scraped."""

    def __init__(self, engine: ReplicaEngine, model_name: str) -> None:
        self.engine = engine
        self.model_name = model_name

    def collect(self) -> Iterator[Metric]:
        engine, cache = self.engine, self.engine.cache
        counters = cache.counters
        usage = 0.0 if cache.unlimited else cache.used_tokens / cache.capacity_tokens

        def gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, help_text, labels=["model_name"])
            family.add_metric([self.model_name], value)
            return family

        def counter(name: str, help_text: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(name, help_text, labels=["model_name"])
            family.add_metric([self.model_name], value)
            return family

        yield gauge("vllm:num_requests_running", "Number of requests in model execution batches.", engine.running)
        yield gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", engine.waiting)
        # vLLM renamed gpu_cache_usage_perc to kv_cache_usage_perc; probers of either version find theirs.
        yield gauge("vllm:gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage.", usage)
        yield gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", usage)
        info = GaugeMetricFamily("vllm:cache_config_info", "Information of the LLMEngine CacheConfig",
                                 labels=["block_size", "enable_prefix_caching", "num_gpu_blocks"])  # fmt: skip
        info.add_metric([str(BLOCK_SIZE), "True", str(cache.capacity_tokens // BLOCK_SIZE)], 1)
        yield info
        queries = counters.cached_tokens + counters.prefilled_tokens
        yield counter("vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.",
                      queries)  # fmt: skip
        yield counter("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.",
                      counters.cached_tokens)  # fmt: skip
        yield counter("vllm:prompt_tokens", "Number of prefill tokens processed.", queries)
        yield counter("vllm:generation_tokens", "Number of generation tokens processed.", engine.generated_tokens)


def metrics_registry(engine: ReplicaEngine, model_name: str) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(engine, model_name))
    return registry


def render_metrics(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


def parse_metrics(text: str) -> dict[str, float]:
    """`{"name{labels}": value}` for every sample line: enough for tests and probes of this exposition."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        samples[key] = float(value)
    return samples
