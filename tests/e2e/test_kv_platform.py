"""The KV-affinity dispatcher inside the whole platform: with a replica pool configured, every model
call waits for the dispatcher's choice and goes to that replica (real emulated replicas over HTTP,
every processor a real process on the real broker), and every process's Prometheus metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agentstream.client.journal import RunBudget, RunRequest
from agentstream.events import (
    LlmCallCompleted,
    LlmCallDispatched,
    LlmCallRouted,
    RunCompleted,
    RunHalted,
)
from agentstream.gateway.service import running_gateway
from agentstream.metrics.endpoint import read_targets
from agentstream.stack import Deployment
from tests.harness import emulator_processes, isolated_settings

SCRAPE_TOKEN = "kv-platform-scrape-token"


@pytest.fixture(scope="module")
def replicas() -> Iterator[dict[str, str]]:
    with emulator_processes(2) as urls:
        yield urls


@pytest.fixture(scope="module")
async def deployment(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory, replicas: dict[str, str]
) -> AsyncIterator[Deployment]:
    home: Path = tmp_path_factory.mktemp("kvplatform")
    settings, scen = await isolated_settings(kafka_bootstrap, home, "kvp")
    pool = ",".join(f"{name}={url}" for name, url in replicas.items())
    env = {"AGENTSTREAM_REPLICAS": pool, "AGENTSTREAM_METRICS_PORT": "0", "AGENTSTREAM_METRICS_TOKEN": SCRAPE_TOKEN}
    async with Deployment(settings, [scen], extra_env=env) as d:
        assert d.procs is not None and "kv-dispatcher-0" in d.procs.procs
        yield d


async def test_model_calls_go_to_the_replica_the_dispatcher_chose(
    deployment: Deployment, replicas: dict[str, str]
) -> None:
    d = deployment
    run_id = await d.client.request_run(RunRequest(task="summarise the quarter", tools=["calculator"]))
    entries = [e.event async for e in d.client.follow(run_id, timeout_s=90)]
    assert isinstance(entries[-1], RunCompleted)
    (dispatched,) = [e for e in entries if isinstance(e, LlmCallDispatched)]
    completed = next(e for e in entries if isinstance(e, LlmCallCompleted))
    assert entries.index(dispatched) < entries.index(completed) and dispatched.call_id == completed.call_id
    assert dispatched.url == replicas[dispatched.replica] and dispatched.policy == "agentstream"
    routed = next(e for e in entries if isinstance(e, LlmCallRouted))
    assert routed.reason.startswith("pinned replica") and completed.provider == f"pinned:{dispatched.url}"
    async with httpx.AsyncClient() as http:
        served = {
            name: (await http.get(f"{url}/_emulator/stats")).json()["completed"] for name, url in replicas.items()
        }
    assert served[dispatched.replica] >= 1


# Every family the issue names, by the process that serves it: these move during the runs below; the
# others must be there. The emulated replicas never ask for a tool, so tool calls and approvals do not
# happen here: tests/unit/test_metrics.py sees their metrics move, from real events.
MOVING = {
    "orchestrator": ("agentstream_step_duration_seconds_count", "agentstream_events_processed_total"),
    "model-invoker": ("agentstream_model_call_duration_seconds_count", "agentstream_model_tokens_total"),
    "cost-governor": ("agentstream_budget_refusals_total",),
    "kv-dispatcher": ("agentstream_kv_dispatch_decisions_total", "agentstream_kv_replica_probes_total"),
    "gateway": ("agentstream_gateway_journal_records_read_total",),
}
PRESENT = {
    "*": ("agentstream_consumer_lag_records", "agentstream_events_dead_lettered", "process_cpu_seconds_total"),
    "model-invoker": ("agentstream_model_call_errors",),
    "tool-executor": ("agentstream_tool_call_duration_seconds", "agentstream_tool_call_errors"),
    "cost-governor": ("agentstream_cost_usd_total",),
    "kv-dispatcher": ("agentstream_kv_dispatch_queue_calls", "agentstream_kv_prefix_cache_turns_total"),
    "gateway": (
        "agentstream_approvals_waiting",
        "agentstream_approval_oldest_wait_seconds",
        "agentstream_sse_subscribers",
        "agentstream_runs_active",
    ),
}


def _totals(text: str) -> dict[str, float]:
    """Each family's samples summed over their labels, by sample name."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


async def test_every_process_serves_metrics_that_move_during_a_run(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = deployment
    assert d.procs is not None
    targets_dir = d.settings.home / "metrics"
    for _ in range(300):  # each process announces its listener once it is up
        if set(read_targets(targets_dir)) >= set(d.procs.procs):
            break
        await asyncio.sleep(0.1)
    monkeypatch.setenv("AGENTSTREAM_METRICS_TOKEN", SCRAPE_TOKEN)
    auth = {"Authorization": f"Bearer {SCRAPE_TOKEN}"}
    async with running_gateway(d.settings, port=0) as api, httpx.AsyncClient(timeout=10, headers=auth) as http:
        urls = {key.rsplit("-", 1)[0]: url for key, url in read_targets(targets_dir).items()}
        urls["gateway"] = f"{api}/metrics"
        assert set(urls) == {k.rsplit("-", 1)[0] for k in d.procs.procs} | {"gateway"}
        assert (
            await http.get(urls["gateway"], headers={"Authorization": "Bearer a-tenant-api-key"})
        ).status_code == 401

        async def scrape() -> dict[str, tuple[str, dict[str, float]]]:
            pages = {name: (await http.get(url)).text for name, url in urls.items()}
            return {name: (text, _totals(text)) for name, text in pages.items()}

        before = await scrape()
        # A run (model calls through the dispatcher, steps, tokens) and one its budget refuses.
        live = await d.client.request_run(RunRequest(task="summarise the year", tools=["calculator"]))
        refused = await d.client.request_run(RunRequest(task="too dear", tools=[], budget=RunBudget(tokens=1)))
        assert any(isinstance(e.event, RunHalted) for e in [e async for e in d.client.follow(refused, timeout_s=60)])
        for _ in range(100):
            after = await scrape()
            moved = {
                (p, n) for p, names in MOVING.items() for n in names if after[p][1].get(n, 0) > before[p][1].get(n, 0)
            }
            if len(moved) == sum(len(names) for names in MOVING.values()):
                break
            await asyncio.sleep(0.2)
    assert moved == {(p, n) for p, names in MOVING.items() for n in names}
    for process, (text, _) in after.items():
        for name in PRESENT["*"] * (process != "gateway") + PRESENT.get(process, ()):
            # A counter with no sample yet is announced under its sample name (`_total`).
            family = name.removesuffix("_total")
            assert f"# TYPE {family} " in text or f"# TYPE {family}_total " in text, f"{process} serves no {name}"
        assert live not in text and refused not in text  # no run id is ever a label
