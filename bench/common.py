"""What the benchmarks share: a broker, isolated topics, whole-journal reads, CPU accounting."""

from __future__ import annotations

import os
import re
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from agentstream.client.journal import JournalEntry
from agentstream.config import ModelSettings, Settings
from agentstream.events import LlmCallCompleted, LlmCallRequested, RunCompleted, ToolCallCompleted
from agentstream.localcluster import LocalCluster
from agentstream.localkafka import LocalKafka, free_port
from agentstream.stack import ensure_topics


@asynccontextmanager
async def bench_settings(name: str) -> AsyncIterator[tuple[Settings, LocalKafka | None]]:
    """KAFKA_BOOTSTRAP_SERVERS if set, else a fresh local broker; topics under a unique prefix."""
    home = Path(tempfile.mkdtemp(prefix=f"agentstream-{name}-"))
    kafka: LocalKafka | None = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        kafka = LocalKafka(home / "kafka", port=free_port(), controller_port=free_port())
        await kafka.start()
        bootstrap = kafka.bootstrap
    settings = Settings(bootstrap, f"{name}{uuid.uuid4().hex[:8]}", home / "home", ModelSettings())
    if kafka is not None:  # the benchmark's driver is the admin; its processors get their own principals
        settings = replace(
            settings, kafka_extra=kafka.admin_config(), kafka_credentials_dir=kafka.credentials.directory
        )
    settings.home.mkdir(parents=True)
    await ensure_topics(settings)
    try:
        yield settings, kafka
    finally:
        if kafka is not None:
            await kafka.stop()


@asynccontextmanager
async def cluster_bench_settings(name: str, brokers: int) -> AsyncIterator[tuple[Settings, LocalCluster]]:
    """As bench_settings, on a fresh local cluster of `brokers` KRaft nodes (free ports)."""
    home = Path(tempfile.mkdtemp(prefix=f"agentstream-{name}-"))
    cluster = LocalCluster(home / "kafka-cluster", brokers, free_ports=True, credentials_dir=home / "keys")
    await cluster.start()
    settings = Settings(cluster.bootstrap, f"{name}{uuid.uuid4().hex[:8]}", home / "home", ModelSettings(),
                        kafka_extra=cluster.admin_config(), kafka_credentials_dir=cluster.credentials.directory)  # fmt: skip
    settings.home.mkdir(parents=True)
    await ensure_topics(settings)
    try:
        yield settings, cluster
    finally:
        await cluster.stop()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its reaped children, from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        ticks = sum(int(x) for x in fields[11:15])
        return ticks / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def span_exporters(pids: dict[str, int]) -> dict[str, int]:
    """The span exporting child of each process in `pids` (tracing on: agentstream/observability/
    export_process.py), named `<process>/span-export`: its CPU is tracing's too."""
    out: dict[str, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except (OSError, ValueError, IndexError):
            continue
        if b"export_worker" in cmdline:
            out.update({f"{name}/span-export": int(entry) for name, pid in pids.items() if pid == ppid})
    return out


@dataclass
class CpuMeter:
    pids: dict[str, int]
    start: dict[str, float]
    t0: float

    @staticmethod
    def begin(pids: dict[str, int]) -> CpuMeter:
        return CpuMeter(pids, {k: cpu_seconds(p) for k, p in pids.items()}, time.monotonic())

    def end(self) -> dict[str, float]:
        return {k: cpu_seconds(p) - self.start[k] for k, p in self.pids.items()}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100.0 * (len(ordered) - 1))))
    return ordered[index]


ISO_DATE = re.compile(r"(?<!\d)\d{4}-\d{2}-\d{2}(?!\d)")


def comparable_trajectory(entries: list[JournalEntry], run_id: str) -> list[tuple[str, ...]]:
    """A run's trajectory with what legitimately differs between two runs of one scenario masked:
    the run id, the demo bank's transfer ids (a hash of each call's idempotency key), and calendar
    dates, because mcp-server-time's convert_time stamps its answer with today's date: a reference
    run before midnight UTC and a chaos run after it differ in nothing else."""
    from agentstream.events import ToolCallRequested
    from agentstream.processors.tool_executor.builtin import transfer_id_for
    from agentstream.trajectory import trajectory

    masks = {run_id: "RUN"}
    for entry in entries:
        if isinstance(entry.event, ToolCallRequested):
            masks[transfer_id_for(entry.event.idempotency_key)] = "TXN"
    out = []
    for item in trajectory(entries):
        parts = []
        for part in item:
            for needle, mask in masks.items():
                part = part.replace(needle, mask)
            parts.append(ISO_DATE.sub("DATE", part))
        out.append(tuple(parts))
    return out


def step_overheads(entries: list[JournalEntry]) -> list[tuple[float, float]]:
    """(overhead ms, model latency ms) of each step of one ReAct run: from the step's model request
    to the next one (or the run's end), less the model's latency and its slowest tool call."""
    requested = {e.event.step: e.timestamp_ms for e in entries if isinstance(e.event, LlmCallRequested)}
    latency = {e.event.step: e.event.latency_ms for e in entries if isinstance(e.event, LlmCallCompleted)}
    tool: dict[int, float] = {}
    for e in entries:
        if isinstance(e.event, ToolCallCompleted):
            tool[e.event.step] = max(tool.get(e.event.step, 0.0), e.event.duration_ms)
    end = next((e.timestamp_ms for e in entries if isinstance(e.event, RunCompleted)), None)
    out = []
    for step, t_req in requested.items():
        t_next = requested.get(step + 1, end)
        if t_next is not None and step in latency:
            out.append(((t_next - t_req) - latency[step] - tool.get(step, 0.0), latency[step]))
    return out
