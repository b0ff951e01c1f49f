"""The gateway's memory and start follow live runs, not history: runs leave memory, are read back
on demand by their index entry (SSE resume included), a restart starts from the checkpoint, a
resumed old run comes back to life, and `runs show` reads an old run by its offset range."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from agentstream import ids
from agentstream.client.journal import JournalClient, RunRequest, read_run_once
from agentstream.config import Settings
from agentstream.events import BudgetSettled, RunCompleted, RunHalted, RunStarted
from agentstream.gateway.history import RunHistory
from agentstream.gateway.projection import HistoryLimits, RunIndex
from agentstream.gateway.service import running_gateway
from agentstream.kafka.partitioner import partition_for
from agentstream.settings import GatewaySettings
from agentstream.sse import parse_sse_bytes
from agentstream.stack import ensure_topics
from agentstream.tenancy.admin import create_tenant, issue_key

TENANT = "acme"
SMALL = HistoryLimits(recent_runs=3, recent_events=1000, window_events=0, checkpoint_s=0.2)


def run_ids(prefix: str, count: int) -> list[str]:
    """Run ids that share one journal partition (of 8), so their journal order is their order."""
    found = (f"run_{prefix}{i:03d}" for i in range(10_000))
    return [run_id for run_id, _ in zip((r for r in found if partition_for(r, 8) == 0), range(count), strict=False)]


async def journal_run(client: JournalClient, run_id: str, *, halt: bool = False) -> None:
    """A run as the processors would journal it: requested, started, ended (or halted)."""
    await client.request_run(RunRequest(task=f"task of {run_id}", tenant_id=TENANT, run_id=run_id))
    started = RunStarted(ids.run_started_id(run_id), run_id, TENANT, "scripted", "[]", 5, "")
    await client.append(started, as_writer="orchestrator")
    if halt:
        halted = RunHalted(ids.halt_id(run_id, 1), run_id, TENANT, 1, 1, "max_steps", "out of steps", True)
        await client.append(halted, as_writer="orchestrator")
    else:
        await end_run(client, run_id)


async def end_run(client: JournalClient, run_id: str) -> None:
    ended = RunCompleted(ids.terminal_id(run_id), run_id, TENANT, 1, f"answer of {run_id}", "done")
    await client.append(ended, as_writer="orchestrator")


@contextlib.asynccontextmanager
async def projection(settings: Settings, limits: HistoryLimits = SMALL) -> AsyncIterator[RunIndex]:
    history = RunHistory(settings)
    index = RunIndex(settings, None, None, history, limits)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(index.run(stop)), asyncio.create_task(history.follow_index(stop))]
    try:
        await index.ready()
        yield index
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await history.aclose()


async def until(check: object, timeout_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


@pytest.fixture
async def journaled(settings: Settings) -> AsyncIterator[tuple[Settings, JournalClient]]:
    await ensure_topics(settings)
    client = JournalClient(settings)
    try:
        yield settings, client
    finally:
        await client.aclose()


async def test_old_runs_leave_memory_and_are_read_back(journaled: tuple[Settings, JournalClient]) -> None:
    settings, client = journaled
    runs = run_ids("old", 10)
    for run_id in runs:
        await journal_run(client, run_id)
    async with projection(settings) as index:
        await until(lambda: index.evicted == 7)
        assert list(index.recent) == runs[-3:] and not index.live
        view = await index.find(TENANT, runs[0])
        assert view is not None and view.status == "completed" and view.final_answer == f"answer of {runs[0]}"
        journal = await client.read_run(runs[0])
        assert [e.offset for e in view.events] == [e.offset for e in journal]
        assert index.recall is not None and index.recall.loaded == 1
        assert await index.find("globex", runs[1]) is None  # another tenant's run is not found
        assert await index.find(TENANT, "run_never") is None
        await asyncio.sleep(0.5)  # a checkpoint passes the evicted runs
        positions = dict(index.positions)
    await journal_run(client, "run_new00")
    async with projection(settings) as again:
        # From the checkpoint: nothing before it is read again.
        assert again.start_offsets == positions
        assert "run_new00" in again.runs and runs[0] not in again.runs
        view = await again.find(TENANT, runs[0])
        assert view is not None and view.final_answer == f"answer of {runs[0]}"


async def test_a_resumed_old_run_comes_back_to_life(journaled: tuple[Settings, JournalClient]) -> None:
    settings, client = journaled
    await journal_run(client, "run_halted", halt=True)
    async with projection(settings) as index:
        for i in range(5):
            await journal_run(client, f"run_later{i}")
        await until(lambda: "run_halted" not in index.runs)
        await client.resume("run_halted", TENANT, 1, 5, "more steps")
        await until(lambda: "run_halted" in index.live)
        view = index.live["run_halted"]
        assert view.status == "running" and view.revived_at > view.first_offset
        assert index.active_runs(TENANT) == 1
        # Its checkpoint offset is the resume's, not the run's start.
        assert min(index.checkpoint_offsets()) <= view.revived_at
        await end_run(client, "run_halted")
        await until(lambda: view.status == "completed")
        assert index.active_runs(TENANT) == 0


async def test_runs_show_reads_an_old_run_by_its_index_entry(journaled: tuple[Settings, JournalClient]) -> None:
    settings, client = journaled
    runs = run_ids("show", 6)
    for run_id in runs:
        await journal_run(client, run_id)
    scanned = [e async for e in client._scan(runs[0], follow=False)]
    assert await client._read_located(runs[0]) is None  # no index entry yet: the scan finds it
    live = run_ids("live", 1)[0]
    await client.request_run(RunRequest(task="still going", tenant_id=TENANT, run_id=live))
    async with projection(settings) as index:
        await until(lambda: index.evicted == 3)
        await asyncio.sleep(0.5)
    # A live run is indexed from its request on: read from its first offset to the end.
    assert [e.event.type_name for e in await client._read_located(live) or []] == ["RunRequested"]
    located = await client._read_located(runs[0])
    assert located is not None
    assert [(e.offset, e.event) for e in located] == [(e.offset, e.event) for e in scanned]
    assert [e.offset for e in await read_run_once(settings, runs[0])] == [e.offset for e in scanned]


async def test_the_api_serves_old_runs_and_resumes_their_streams(
    journaled: tuple[Settings, JournalClient], tmp_path: Path
) -> None:
    settings, client = journaled
    settings = dataclasses.replace(settings, gateway=GatewaySettings(recent_runs=2, checkpoint_s=0.2))
    await create_tenant(settings, TENANT, "Acme", rate_per_s=100, burst=100, max_active_runs=10)
    key = await issue_key(settings, TENANT, "test")
    runs = run_ids("api", 6)
    for run_id in runs:
        await journal_run(client, run_id)
        settled = BudgetSettled(f"{run_id}/s", run_id, TENANT, 1, f"{run_id}/c", "model", "", "m", 0.5, 1, 0, 1, 0.0,
                                "v")  # fmt: skip
        await client.append(settled, as_writer="cost-governor")  # after the end, as a last call's often is
    # The stream sends what the run's view holds: a settlement after the end counts in its cost only.
    journal = [e for e in await client.read_run(runs[0]) if not isinstance(e.event, BudgetSettled)]
    for restart in range(2):
        async with running_gateway(settings, port=0) as url:
            headers = {"Authorization": f"Bearer {key}"}
            async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
                listed = (await http.get("/v1/runs")).json()["data"]
                # Every run on record, not only those held (the recent window): after a restart too,
                # from their index entries' summaries (agentstream.gateway.catalog).
                assert [r["id"] for r in listed] == runs
                assert listed[0] == (await http.get(f"/v1/runs/{runs[0]}")).json()
                series = (await http.get("/v1/costs/series", params={"by": "run", "top": "50"})).json()
                assert sorted(line["key"] for line in series["series"]) == sorted(runs)
                r = await http.get(f"/v1/runs/{runs[0]}")
                assert r.status_code == 200, r.text
                assert r.json()["status"] == "completed" and r.json()["final_answer"] == f"answer of {runs[0]}"
                cost = await http.get(f"/v1/runs/{runs[0]}/cost")
                assert cost.status_code == 200
                # SSE resume of an old run: everything after Last-Event-ID, then the stream ends.
                events = await http.get(f"/v1/runs/{runs[0]}/events", headers={"Last-Event-ID": str(journal[0].offset)})
                ids_sent = [int(m.id) for m in parse_sse_bytes(events.content) if m.id is not None]
                assert ids_sent == [e.offset for e in journal[1:]], (restart, events.text)
                assert (await http.get("/v1/runs/run_missing")).status_code == 404
                await asyncio.sleep(0.5)  # a checkpoint, so the restart starts past these runs


async def test_a_run_being_streamed_stays_in_memory(journaled: tuple[Settings, JournalClient]) -> None:
    settings, client = journaled
    watched, *others = run_ids("watch", 6)
    await journal_run(client, watched)
    async with projection(settings) as index:
        await until(lambda: watched in index.recent)
        async with index.subscribe(watched):
            for run_id in others:
                await journal_run(client, run_id)
            await until(lambda: index.evicted >= 2)
            assert watched in index.recent and len(index.recent) == SMALL.recent_runs
        for run_id in run_ids("after", SMALL.recent_runs):
            await journal_run(client, run_id)
        await until(lambda: watched not in index.runs)  # once nobody streams it, it may go
