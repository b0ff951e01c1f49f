"""Polls model replicas (vLLM, SGLang, or the replica emulator) and reports each one's health and KV
occupancy as a `ReplicaStatus` on the `replicas.status` table.

`GET /health` decides health; `GET /metrics` (Prometheus text) gives the load. vLLM exposes
`vllm:num_requests_running`/`_waiting`, `vllm:kv_cache_usage_perc` (`gpu_cache_usage_perc` before
v0.10) and its cache size as labels of `vllm:cache_config_info` (num_gpu_blocks x block_size);
SGLang exposes `sglang:num_running_reqs`, `sglang:num_queue_reqs`, `sglang:token_usage` and, in
recent versions, `sglang:max_total_num_tokens`. A replica that answers health but not metrics is
healthy with unknown capacity (0), which the dispatcher reads as "cannot check KV room".
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from agentstream.events import ReplicaStatus
from agentstream.settings.processors import parse_replicas

log = logging.getLogger("agentstream.kv_dispatcher.prober")

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?\s*$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass(frozen=True, slots=True)
class ReplicaLoad:
    running: int = 0
    waiting: int = 0
    capacity_tokens: int = 0  # 0: not exposed
    used_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Target:
    replica: str
    url: str


def parse_targets(spec: str) -> list[Target]:
    """`"r0=http://127.0.0.1:9001,r1=http://..."` (the AGENTSTREAM_REPLICAS format)."""
    return [Target(name, url) for name, url in parse_replicas(spec).items()]


def parse_exposition(text: str) -> list[Sample]:
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, raw_labels, raw_value = match.groups()
        try:
            value = float(raw_value)
        except ValueError:
            continue
        labels = {k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in _LABEL.findall(raw_labels or "")}
        samples.append(Sample(name, labels, value))
    return samples


def load_from_metrics(text: str) -> ReplicaLoad:
    """What a vLLM or SGLang /metrics page says about load and KV. Several series of one metric (one
    per model or engine) are summed for counts; the fullest cache wins for usage."""
    sums: dict[str, float] = {}
    peaks: dict[str, float] = {}
    capacity = 0
    for s in parse_exposition(text):
        sums[s.name] = sums.get(s.name, 0.0) + s.value
        peaks[s.name] = max(peaks.get(s.name, 0.0), s.value)
        if s.name == "vllm:cache_config_info":
            blocks, size = s.labels.get("num_gpu_blocks", ""), s.labels.get("block_size", "")
            if blocks.isdigit() and size.isdigit():
                capacity = max(capacity, int(blocks) * int(size))
    if "sglang:max_total_num_tokens" in peaks:
        capacity = max(capacity, int(peaks["sglang:max_total_num_tokens"]))
    usage_names = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage")
    usage = max((peaks[n] for n in usage_names if n in peaks), default=0.0)
    running = sums.get("vllm:num_requests_running", 0.0) + sums.get("sglang:num_running_reqs", 0.0)
    waiting = sums.get("vllm:num_requests_waiting", 0.0) + sums.get("sglang:num_queue_reqs", 0.0)
    return ReplicaLoad(int(running), int(waiting), capacity, round(usage * capacity))


class Prober:
    def __init__(
        self,
        targets: list[Target],
        publish: Callable[[ReplicaStatus], Awaitable[None]],
        clock: Callable[[], int],
        *,
        interval_s: float = 0.5,
        timeout_s: float = 2.0,
    ) -> None:
        self.targets = targets
        self.publish = publish
        self.clock = clock
        self.interval_s = interval_s
        self._client = httpx.AsyncClient(timeout=timeout_s)
        # For /metrics (agentstream/metrics/kv.py): each replica's last status, probes by outcome.
        self.last: dict[str, ReplicaStatus] = {}
        self.outcomes: dict[tuple[str, bool], int] = {}
        self.round_s = 0.0

    async def probe(self, target: Target) -> ReplicaStatus:
        healthy, load = False, ReplicaLoad()
        try:
            healthy = (await self._client.get(f"{target.url}/health")).status_code == 200
            if healthy:
                response = await self._client.get(f"{target.url}/metrics")
                if response.status_code == 200:
                    load = load_from_metrics(response.text)
        except httpx.HTTPError as exc:
            log.debug("probe of %s failed: %s", target.replica, exc)
        return ReplicaStatus(
            f"replica/{target.replica}", target.replica, target.url, healthy, load.capacity_tokens,
            load.used_tokens, load.running, load.waiting, self.clock(),
        )  # fmt: skip

    async def probe_all(self) -> list[ReplicaStatus]:
        started = time.monotonic()
        statuses = await asyncio.gather(*(self.probe(t) for t in self.targets))
        self.round_s = time.monotonic() - started
        for status in statuses:
            self.last[status.replica] = status
            self.outcomes[status.replica, status.healthy] = self.outcomes.get((status.replica, status.healthy), 0) + 1
            await self.publish(status)
        return list(statuses)

    async def run(self) -> None:
        """Probes forever (until cancelled); a failed publish is retried on the next round."""
        while True:
            try:
                await self.probe_all()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("replica status not published: %s", exc)
            await asyncio.sleep(self.interval_s)

    async def aclose(self) -> None:
        await self._client.aclose()
