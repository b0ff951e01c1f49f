"""The metrics collectors (agentstream/metrics): the processor shell's counts of a real run over
the broker's twin, the run metrics read from the events its cores wrote, the listener with its
scrape token and target file, the gateway's event-stream count, and the KV dispatcher's and its
prober's metrics over a real emulated replica."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from agentstream.codec import AvroCodec
from agentstream.config import ModelSettings, Settings
from agentstream.doubles.replica_emulator.profile import ReplicaProfile
from agentstream.doubles.replica_emulator.runner import running_emulator
from agentstream.events import (
    ApprovalRequested,
    BudgetExceeded,
    BudgetSettled,
    LlmCallFailed,
    RunRequested,
    ToolCallCompleted,
)
from agentstream.gateway.projection import RunIndex
from agentstream.kafka.journal import Record
from agentstream.metrics.endpoint import metrics_listener, read_targets
from agentstream.metrics.gateway import EventStreams, api_port_route, gateway_registry
from agentstream.metrics.kv import DispatcherCollector, ProberCollector
from agentstream.metrics.labels import OTHER, BoundedValues
from agentstream.metrics.runs import RunMetrics
from agentstream.processors.kv_dispatcher.prober import Prober, Target
from agentstream.processors.kv_dispatcher.state import DispatchState, Waiting
from agentstream.settings import MetricsSettings
from tests.kafka_twin import CrashPlan
from tests.unit.test_commit_order import JOURNAL, RUNS, World

TOKEN = "scrape-token-0123456789"


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


async def test_the_shell_counts_what_each_core_applied_emitted_and_dead_lettered(tmp_path: Path) -> None:
    world = World(tmp_path)
    # An unreadable record of a type a core accepts: dead-lettered, counted under its type.
    world.broker.append(Record(JOURNAL, b"run0", b"not avro", 0, [("type", b"RunRequested")]))
    runtime = world.runtime(CrashPlan())
    await world.drive(runtime, CrashPlan())
    registry, n = runtime.metrics.registry, float(len(RUNS))
    processed = "agentstream_events_processed_total"
    assert value(registry, processed, processor="planner", event_type="RunRequested") == n
    assert value(registry, processed, processor="finisher", event_type="LlmCallCompleted") == n
    assert value(registry, "agentstream_events_emitted_total", processor="finisher", event_type="RunCompleted") == n
    dead = "agentstream_events_dead_lettered_total"
    assert value(registry, dead, processor="shell", event_type="RunRequested") == 1
    # The run metrics come from the same writes: one step per run (request to end), one model call each.
    assert value(registry, "agentstream_step_duration_seconds_count") == n
    assert value(registry, "agentstream_runs_ended_total", outcome="completed") == n
    assert value(registry, "agentstream_model_call_duration_seconds_count", provider="twin", model="m") == n
    assert value(registry, "agentstream_model_tokens_total", model="m", type="output") == n
    assert value(registry, "agentstream_consumer_lag_records", process="shell") == 0
    text = generate_latest(registry).decode()
    assert "process_cpu_seconds_total" in text and "run0" not in text  # no run id is ever a label
    runtime._close_consumer()


def test_run_metrics_count_failures_tools_costs_and_refusals() -> None:
    registry = CollectorRegistry()
    runs = RunMetrics(registry, label_values=2)
    base: dict[str, Any] = {"run_id": "r", "tenant_id": "t", "step": 1, "call_id": "c"}
    runs.observe(LlmCallFailed(event_id="f", **base, provider="p", error_type="timeout", message="", status=None,
                               retryable=True, attempt=1, final=False))  # fmt: skip
    for i, tool in enumerate(("calc", "search", "third", "fourth", "fifth")):
        runs.observe(ToolCallCompleted(event_id=f"t{i}", **base, tool=tool, idempotency_key="k", content="x",
                                       is_error=tool != "calc", duration_ms=250.0))  # fmt: skip
    runs.observe(BudgetSettled(event_id="s", **base, kind="model", tool="", model="m", cost_usd=0.25, input_tokens=1,
                               cached_input_tokens=0, output_tokens=1, released_usd=0.0, price_version="v"))  # fmt: skip
    runs.observe(BudgetExceeded(event_id="x", **base, kind="model", limit="budget_usd", reason="", resumable=True,
                                evidence_json="{}", decided_ms=0))  # fmt: skip
    errors = "agentstream_model_call_errors_total"
    assert value(registry, errors, provider="p", error_type="timeout", final="false") == 1
    assert value(registry, "agentstream_tool_call_duration_seconds_sum", tool="calc") == 0.25
    assert value(registry, "agentstream_tool_call_errors_total", tool="search") == 1
    # Past two tool names, the rest are one series: a tenant registering tools cannot grow them.
    assert value(registry, "agentstream_tool_call_errors_total", tool=OTHER) == 2
    assert value(registry, "agentstream_cost_usd_total", kind="model", model="m") == 0.25
    assert value(registry, "agentstream_budget_refusals_total", limit="budget_usd") == 1


def test_bounded_values_keep_the_first_ones() -> None:
    bounded = BoundedValues(2)
    assert [bounded(v) for v in ("a", "b", "c", "a")] == ["a", "b", OTHER, "a"]


async def test_the_listener_wants_the_token_and_announces_its_target(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    RunMetrics(registry)
    settings = MetricsSettings(port=0, token=TOKEN, targets_dir=tmp_path / "targets")
    async with metrics_listener(registry, settings, tmp_path, "engine", "1") as url, httpx.AsyncClient() as http:
        assert url is not None
        assert read_targets(tmp_path / "targets") == {"engine-1": f"{url}/metrics"}
        refused = await http.get(f"{url}/metrics")
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        wrong = await http.get(f"{url}/metrics", headers={"Authorization": "Bearer not-the-token-at-all"})
        assert wrong.status_code == 401
        scraped = await http.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert scraped.status_code == 200 and "# TYPE agentstream_step_duration_seconds histogram" in scraped.text
    assert read_targets(tmp_path / "targets") == {}  # gone with the process
    async with metrics_listener(registry, MetricsSettings(), tmp_path, "engine", "1") as off:
        assert off is None  # no port: no listener


async def test_the_gateway_counts_open_event_streams_and_its_api_route_is_off_without_a_token() -> None:
    seen: list[int] = []

    async def events(_request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"data: 1\n\n"
            seen.append(streams.open)

        return StreamingResponse(body(), media_type="text/event-stream")

    async def plain(_request: Request) -> Response:
        return Response(b"{}", media_type="application/json")

    registry = CollectorRegistry()
    app = Starlette(routes=[Route("/events", events), Route("/plain", plain)])
    app.add_route("/metrics", api_port_route(registry, None), methods=["GET"])
    app.add_route("/metrics-on", api_port_route(registry, TOKEN), methods=["GET"])
    streams = EventStreams(app)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=streams), base_url="http://gw") as http:
        assert (await http.get("/events")).status_code == 200
        assert (await http.get("/plain")).status_code == 200
        off = await http.get("/metrics")
        assert off.status_code == 404 and "AGENTSTREAM_METRICS_TOKEN" in off.text
        assert (await http.get("/metrics-on")).status_code == 401
        on = await http.get("/metrics-on", headers={"Authorization": f"Bearer {TOKEN}"})
        assert on.status_code == 200
    assert seen == [1] and streams.open == 0 and streams.opened == 1


async def test_the_dispatcher_and_prober_metrics_read_their_state() -> None:
    state = DispatchState()
    state.enqueue(Waiting("c1", "run1", 100, 0))
    state.counters.dispatched, state.counters.cache_hits, state.counters.cache_misses = 5, 3, 1
    registry = CollectorRegistry()
    registry.register(DispatcherCollector(state))
    assert value(registry, "agentstream_kv_dispatch_queue_calls") == 1
    assert value(registry, "agentstream_kv_dispatch_decisions_total", outcome="dispatched") == 5
    assert value(registry, "agentstream_kv_prefix_cache_turns_total", result="hit") == 3
    assert value(registry, "agentstream_kv_prefix_cache_turns_total", result="miss") == 1

    profile = ReplicaProfile(kv_capacity_tokens=10_000, prefill_s_per_token=0.0, decode_s_per_token=0.0, max_running=4)
    published: list[object] = []

    async def publish(status: object) -> None:
        published.append(status)

    async with running_emulator(profile) as (url, _emulator):
        prober = Prober([Target("r0", url), Target("gone", "http://127.0.0.1:9")], publish, lambda: 0)
        registry.register(ProberCollector(prober))
        await asyncio.wait_for(prober.probe_all(), 10)
        await prober.aclose()
    assert value(registry, "agentstream_kv_replica_probes_total", replica="r0", healthy="true") == 1
    assert value(registry, "agentstream_kv_replica_probes_total", replica="gone", healthy="false") == 1
    assert value(registry, "agentstream_kv_replica_up", replica="r0") == 1
    assert value(registry, "agentstream_kv_replica_requests", replica="r0", state="waiting") == 0
    assert len(published) == 2


def test_the_gateway_reports_waiting_approvals_and_the_oldest_ones_age(tmp_path: Path) -> None:
    index = RunIndex(Settings("127.0.0.1:9", "metrics", tmp_path, ModelSettings()))
    registry = gateway_registry(index, EventStreams(Starlette()))
    assert value(registry, "agentstream_approvals_waiting") == 0
    assert value(registry, "agentstream_approval_oldest_wait_seconds") == 0
    codec, now_ms = AvroCodec(), int(time.time() * 1000)
    request = RunRequested(event_id="r/req", run_id="r", tenant_id="t", task="pay", model="m", tools=[], max_steps=3,
                           idempotency_key="k")  # fmt: skip
    asked = ApprovalRequested(event_id="r/ask", run_id="r", tenant_id="t", step=1, call_id="c", approval_id="a1",
                              tool="transfer_funds", tool_version="1", tier="irreversible", arguments_json="{}",
                              reason="", requested_ms=now_ms - 90_000, expires_ms=now_ms + 60_000)  # fmt: skip
    for offset, event in enumerate((request, asked)):
        index._apply(0, offset, now_ms, codec.encode(event))
    assert value(registry, "agentstream_approvals_waiting") == 1
    assert 90 <= (value(registry, "agentstream_approval_oldest_wait_seconds") or 0) < 120
    assert value(registry, "agentstream_runs_active") == 1
    assert value(registry, "agentstream_gateway_journal_records_read_total") == index.records_read
