"""The KV-affinity dispatcher inside the whole platform: with a replica pool configured, every model
call waits for the dispatcher's choice and goes to that replica (real emulated replicas over HTTP,
every processor a real process on the real broker)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from agentstream.client.journal import RunRequest
from agentstream.events import LlmCallCompleted, LlmCallDispatched, LlmCallRouted, RunCompleted
from agentstream.stack import Deployment
from tests.harness import emulator_processes, isolated_settings


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
    async with Deployment(settings, [scen], extra_env={"AGENTSTREAM_REPLICAS": pool}) as d:
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
