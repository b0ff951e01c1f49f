"""Prometheus text exposition under vLLM's metric names, so one prober reads vLLM and the emulator.

Names and label sets follow vLLM's V1 metrics: gauges carry `model_name`, `cache_config_info` is an
info-style gauge whose labels are the cache config, and counters are exposed with the `_total`
suffix that prometheus_client appends.
"""

from __future__ import annotations

from agentstream.doubles.replica_emulator.engine import ReplicaEngine
from agentstream.doubles.replica_emulator.profile import BLOCK_SIZE

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def render_metrics(engine: ReplicaEngine, model_name: str) -> str:
    cache = engine.cache
    counters = cache.counters
    label = f'{{model_name="{_escape(model_name)}"}}'
    usage = 0.0 if cache.unlimited else cache.used_tokens / cache.capacity_tokens
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, value: float, labels: str = label, sample: str = "") -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.append(f"{sample or name}{labels} {_number(value)}")

    metric("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.", engine.running)
    metric("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.", engine.waiting)
    # vLLM renamed gpu_cache_usage_perc to kv_cache_usage_perc; probers of either version find theirs.
    metric("vllm:gpu_cache_usage_perc", "gauge", "GPU KV-cache usage. 1 means 100 percent usage.", usage)
    metric("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.", usage)
    blocks = cache.capacity_tokens // BLOCK_SIZE
    metric(
        "vllm:cache_config_info",
        "gauge",
        "Information of the LLMEngine CacheConfig",
        1,
        labels=f'{{block_size="{BLOCK_SIZE}",enable_prefix_caching="True",num_gpu_blocks="{blocks}"}}',
    )
    queries = counters.cached_tokens + counters.prefilled_tokens
    metric(
        "vllm:prefix_cache_queries",
        "counter",
        "Prefix cache queries, in terms of number of queried tokens.",
        queries,
        sample="vllm:prefix_cache_queries_total",
    )
    metric(
        "vllm:prefix_cache_hits",
        "counter",
        "Prefix cache hits, in terms of number of cached tokens.",
        counters.cached_tokens,
        sample="vllm:prefix_cache_hits_total",
    )
    metric(
        "vllm:prompt_tokens",
        "counter",
        "Number of prefill tokens processed.",
        queries,
        sample="vllm:prompt_tokens_total",
    )
    metric(
        "vllm:generation_tokens",
        "counter",
        "Number of generation tokens processed.",
        engine.generated_tokens,
        sample="vllm:generation_tokens_total",
    )
    return "\n".join(lines) + "\n"


def parse_metrics(text: str) -> dict[str, float]:
    """`{"name{labels}": value}` for every sample line: enough for tests and probes of this exposition."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        samples[key] = float(value)
    return samples
