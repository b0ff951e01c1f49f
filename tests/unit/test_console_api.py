"""The console's data API in-process (httpx.ASGITransport, no broker): the runs list's filters,
pagination both ways and tenant scoping over the run catalog, the cost series, and a huge tool
result cut in the event stream with the event whole at its `more_url`."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from agentstream.codec import AvroCodec
from agentstream.config import ModelSettings, Settings
from agentstream.events import (
    BudgetSettled,
    RunCompleted,
    RunEvent,
    RunFlagged,
    RunIndexed,
    RunRequested,
    ToolCallCompleted,
)
from agentstream.gateway.app import Gateway, GatewayConfig
from agentstream.gateway.catalog import RunCatalog, RunFilter
from agentstream.gateway.projection import RunIndex
from tests.unit.test_gateway_contract import KEY, OTHER, Keys, MemoryJournal, Rates

HOUR = 3_600_000
T0 = 1_700_000_000_000 // HOUR * HOUR  # an hour's start: bucket edges fall on whole hours


@dataclass
class Console:
    client: httpx.AsyncClient
    index: RunIndex
    offsets: itertools.count[int]
    codec: AvroCodec
    transport: httpx.AsyncBaseTransport

    def feed(self, event: RunEvent, at_ms: int) -> int:
        offset = next(self.offsets)
        self.index._apply(0, offset, at_ms, self.codec.encode(event))
        return offset

    def run(self, n: int, *, tenant: str = "acme", tools: tuple[str, ...] = (), cost: float = 0.0,
            flagged: bool = False, done: bool = True, tool_cost: float = 0.0) -> str:  # fmt: skip
        run_id = f"run_{n:024x}"
        at = T0 + n * 60_000
        self.feed(RunRequested(f"{run_id}/req", run_id, tenant, f"task {n}", "m", list(tools), 5, f"k{n}"), at)
        if cost:
            self.feed(BudgetSettled(f"{run_id}/s1", run_id, tenant, 1, f"{run_id}/c1", "model", "", "gpt", cost,
                                    10, 0, 5, 0.0, "v1"), at + 1)  # fmt: skip
        if tool_cost:
            self.feed(BudgetSettled(f"{run_id}/s2", run_id, tenant, 1, f"{run_id}/c2", "tool", tools[0], "",
                                    tool_cost, 0, 0, 0, 0.0, "v1"), at + HOUR)  # fmt: skip
        if flagged:
            self.feed(RunFlagged(f"{run_id}/f", run_id, tenant, 1, "repeated_denial", "x", "s", 3, "{}"), at + 2)
        if done:
            self.feed(RunCompleted(f"{run_id}/done", run_id, tenant, 1, "ok", "final"), at + 3)
        return run_id

    async def ids(self, **params: str) -> list[str]:
        r = await self.client.get("/v1/runs", params={"order": "newest", **params})
        assert r.status_code == 200, r.text
        return [run["id"] for run in r.json()["data"]]


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[Console]:
    settings = Settings("127.0.0.1:1", "console", tmp_path, ModelSettings(), kafka_extra={})
    index = RunIndex(settings)
    gateway = Gateway(index, MemoryJournal(settings, index), Keys(), Rates(), GatewayConfig())
    transport = httpx.ASGITransport(app=gateway.app())
    async with httpx.AsyncClient(transport=transport, base_url="http://gw", headers={"Authorization": KEY}) as c:
        yield Console(c, index, itertools.count(), AvroCodec(), transport)


async def test_filters_select_the_runs_they_name(console: Console) -> None:
    calc = console.run(1, tools=("calc",), cost=0.5)
    search = console.run(2, tools=("search", "calc2"), cost=2.0, flagged=True)
    live = console.run(3, tools=("search",), done=False)
    assert await console.ids() == [live, search, calc]
    assert await console.ids(status="completed") == [search, calc]
    assert await console.ids(status="queued") == [live]
    assert await console.ids(tool="calc") == [calc]  # a whole name: "calc2" is not "calc"
    assert await console.ids(flagged="true") == [search]
    assert await console.ids(flagged="false") == [live, calc]
    assert await console.ids(min_cost_usd="1") == [search]
    assert await console.ids(max_cost_usd="1") == [live, calc]
    assert await console.ids(min_cost_usd="0.1", max_cost_usd="0.5") == [calc]
    assert await console.ids(q=calc[:-1]) == [live, search, calc]
    assert await console.ids(q=calc) == [calc]
    assert await console.ids(q=search) == [search]
    assert await console.ids(q="run_f") == []
    assert await console.ids(tenant="acme", tool="search", flagged="true") == [search]
    # The list answers with the run resource, cost and flags as the run page shows them.
    (run,) = (await console.client.get("/v1/runs", params={"q": search})).json()["data"]
    assert run == (await console.client.get(f"/v1/runs/{search}")).json()


async def test_pages_follow_the_cursor_both_ways_without_gaps(console: Console) -> None:
    made = [console.run(n) for n in range(1, 8)]
    for order, expected in (("newest", made[::-1]), ("oldest", made)):
        seen, cursor = [], None
        while True:
            params = {"order": order, "limit": "3", **({"cursor": cursor} if cursor else {})}
            page = (await console.client.get("/v1/runs", params=params)).json()
            seen += [run["id"] for run in page["data"]]
            if (cursor := page["next_cursor"]) is None:
                break
        assert seen == expected
    r = await console.client.get("/v1/runs", params={"cursor": "12.zz"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "cursor"


async def test_runs_that_left_memory_are_still_listed(console: Console, tmp_path: Path) -> None:
    made = [console.run(n) for n in range(1, 6)]
    console.index.catalog.flush()
    console.index.recent.clear()  # as eviction leaves them: known only to the catalog
    assert await console.ids(status="completed") == made[::-1]


async def test_another_tenant_sees_nothing(console: Console) -> None:
    mine = console.run(1, tools=("calc",), cost=1.0)
    other = {"Authorization": OTHER}
    assert (await console.client.get("/v1/runs", headers=other)).json()["data"] == []
    assert (await console.client.get("/v1/runs", params={"q": mine}, headers=other)).json()["data"] == []
    assert await console.ids(tenant="globex") == []  # naming another tenant: nothing, never its runs
    series = (await console.client.get("/v1/costs/series", params={"since_ms": T0, "until_ms": T0 + 4 * HOUR},
                                       headers=other)).json()  # fmt: skip
    assert series["series"] == [] and series["total_usd"] == 0
    assert (await console.client.get(f"/v1/runs/{mine}/events/0", headers=other)).status_code == 404


async def test_cost_series_per_tool_model_and_run(console: Console) -> None:
    a = console.run(1, tools=("search",), cost=0.25, tool_cost=1.0)
    b = console.run(2, tools=("search",), cost=0.5)
    console.run(3, tenant="globex", cost=9.0)
    window: dict[str, str | int] = {"since_ms": T0, "until_ms": T0 + 3 * HOUR, "bucket": "1h"}
    by_model = (await console.client.get("/v1/costs/series", params={**window, "by": "model"})).json()
    assert by_model["total_usd"] == 1.75 and by_model["bucket_ms"] == HOUR
    assert by_model["series"] == [{"key": "gpt", "total_usd": 0.75, "calls": 2,
                                   "points": [{"t_ms": T0, "usd": 0.75, "calls": 2}]}]  # fmt: skip
    by_tool = (await console.client.get("/v1/costs/series", params={**window, "by": "tool"})).json()
    assert by_tool["series"][0]["points"] == [{"t_ms": T0 + HOUR, "usd": 1.0, "calls": 1}]
    by_run = (await console.client.get("/v1/costs/series", params={**window, "by": "run", "top": "1"})).json()
    assert [(line["key"], line["total_usd"]) for line in by_run["series"]] == [(a, 1.25), ("(other)", 0.5)]
    one = (await console.client.get("/v1/costs/series", params={**window, "by": "tenant", "run_id": b})).json()
    assert [(line["key"], line["total_usd"]) for line in one["series"]] == [("acme", 0.5)]
    # A window of more than 5000 buckets keeps its latest 5000; an empty one has nothing in it.
    wide = (await console.client.get("/v1/costs/series", params={"since_ms": 0, "until_ms": T0, "bucket": "1m"})).json()
    assert wide["since_ms"] == T0 - 5000 * 60_000 and wide["series"] == []
    empty = (await console.client.get("/v1/costs/series", params={"since_ms": T0 + HOUR, "until_ms": T0})).json()
    assert empty["since_ms"] == empty["until_ms"] == T0 and empty["total_usd"] == 0


async def test_a_huge_tool_result_is_cut_with_a_link_to_the_whole(console: Console) -> None:
    run_id = console.run(1, tools=("dump",), done=False)
    huge = "<script>alert(1)</script>" + "x" * 100_000
    offset = console.feed(ToolCallCompleted(f"{run_id}/t", run_id, "acme", 1, "c1", "dump", "k", huge, False, 3.0),
                          T0 + 70_000)  # fmt: skip
    console.feed(RunCompleted(f"{run_id}/done", run_id, "acme", 1, "ok", "final"), T0 + 80_000)
    r = await console.client.get(f"/v1/runs/{run_id}/events", params={"truncate": "1000"})
    records = [orjson.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    (cut,) = [rec for rec in records if rec["type"] == "ToolCallCompleted"]
    assert cut["content"] == huge[:1000] and cut["truncated"] == {"content": len(huge)}
    assert cut["more_url"] == f"/v1/runs/{run_id}/events/{offset}"
    assert all("truncated" not in rec for rec in records if rec["type"] != "ToolCallCompleted")
    whole = await console.client.get(cut["more_url"])
    assert whole.status_code == 200 and whole.json()["content"] == huge and whole.json()["offset"] == offset
    assert (await console.client.get(f"/v1/runs/{run_id}/events/{offset + 99}")).status_code == 404
    untouched = (await console.client.get(f"/v1/runs/{run_id}/events")).text
    assert [
        orjson.loads(line[6:]).get("content")
        for line in untouched.splitlines()
        if 'data: {"type":"ToolCallCompleted' in line
    ] == [huge]


async def test_a_restart_lists_runs_from_their_index_entries(console: Console) -> None:
    made = [console.run(n, tools=("search",), cost=0.25 * n, flagged=n == 2, tool_cost=0.1) for n in (1, 2, 3)]
    before = console.index.catalog.runs("acme", RunFilter(), None, 10, newest=True)
    series_before = console.index.catalog.series("acme", "run", HOUR, T0, T0 + 3 * HOUR, None)
    # What the run index carries for each (history.record at settle and eviction), read by a new gateway.
    entries = [
        RunIndexed(f"index/{v.run_id}", v.run_id, v.tenant_id, 0, v.first_offset, v.last_offset, v.last_ms,
                   v.status, v.created_ms, console.index.catalog.summary(v))
        for v in (console.index.runs[run_id] for run_id in made)
    ]  # fmt: skip
    restarted = RunCatalog()
    for entry in entries:
        restarted.ingest(entry)
        restarted.ingest(dataclasses.replace(entry, summary="not json"))  # skipped, never a crash
    after = restarted.runs("acme", RunFilter(), None, 10, newest=True)
    assert [(c, r, orjson.loads(res)) for c, r, res in after] == [(c, r, orjson.loads(res)) for c, r, res in before]
    assert restarted.runs("acme", RunFilter(flagged=True), None, 10, newest=True)[0][1] == made[1]
    assert restarted.series("acme", "run", HOUR, T0, T0 + 3 * HOUR, None) == series_before
    # An older entry read late never hides a newer state of the run.
    stale = dataclasses.replace(entries[0], last_offset=0, summary=entries[1].summary)
    restarted.ingest(stale)
    assert restarted.runs("acme", RunFilter(id_prefix=made[0]), None, 1, newest=True) == after[-1:]


async def test_the_sdk_lists_with_the_console_filters(console: Console) -> None:
    from agentstream.client.http import InvalidRequest, RunsClient

    calc = console.run(1, tools=("calc",), cost=0.5)
    search = console.run(2, tools=("search",), cost=2.0, flagged=True)
    live = console.run(3, tools=("search",), done=False)
    async with RunsClient("http://gw", KEY.removeprefix("Bearer "), transport=console.transport) as sdk:
        newest = [r.id async for r in sdk.list(order="newest", limit=2)]
        assert newest == [live, search, calc]
        assert [r.id async for r in sdk.list(tool="search", flagged=True)] == [search]
        assert [r.id async for r in sdk.list(flagged=False, max_cost_usd=1.0)] == [calc, live]
        assert [r.id async for r in sdk.list("completed", min_cost_usd=1.0)] == [search]
        assert [r.id for r in (await sdk.list_page(id_prefix=calc)).data] == [calc]
        with pytest.raises(InvalidRequest):  # refused here, as the gateway would refuse it
            await sdk.list_page(min_cost_usd=-1.0)
