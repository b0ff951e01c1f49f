"""Run trees through the real gateway over real HTTP and a real broker: child runs journaled as a
parent's orchestrator journals them (their RunRequested carrying parent_run_id and depth), the
tree answer and its tenant scoping, the refusal of a client's parent_run_id, a workflow run's
RunRequested, and a tree's event stream resumed across forced reconnects without a gap or a
duplicate (raw SSE, and the SDK over a connection cut mid-message)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import orjson
import pytest

from agentstream import ids
from agentstream.cli.trees import tree_from_journal
from agentstream.client import RunsClient
from agentstream.client.journal import JournalClient, read_run_once
from agentstream.config import Settings
from agentstream.events import RunCompleted, RunRequested, RunStarted, ToolCallRequested
from agentstream.gateway.service import running_gateway
from agentstream.sse import parse_sse
from agentstream.tenancy.admin import create_tenant, issue_key
from tests.harness import isolated_settings


@dataclass
class Stack:
    settings: Settings
    url: str
    key_a: str
    key_b: str
    journal: JournalClient

    def client(self, key: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


@pytest.fixture(scope="module")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    settings, _ = await isolated_settings(kafka_bootstrap, tmp_path_factory.mktemp("trees"), "tr")
    for tenant in ("acme", "globex"):
        await create_tenant(settings, tenant, tenant, rate_per_s=500, burst=1000, max_active_runs=100)
    keys = [await issue_key(settings, tenant, "test") for tenant in ("acme", "globex")]
    journal = JournalClient(settings)  # the operator's: it signs as the orchestrator would
    try:
        async with running_gateway(settings, port=0) as url:
            yield Stack(settings, url, keys[0], keys[1], journal)
    finally:
        await journal.aclose()


async def child(stack: Stack, parent: str, step: int, depth: int, tenant: str = "acme") -> str:
    """A child's request, as its parent's orchestrator journals it on the child's own key."""
    call = ids.tool_call_id(parent, step, 0)
    run_id = ids.child_run_id(call)
    task = f"sub-task {step} of {parent}"
    request = RunRequested(ids.run_requested_id(run_id), run_id, tenant, task, "scripted", [], 5, run_id,
                           parent_run_id=parent, parent_call_id=call, depth=depth)  # fmt: skip
    await stack.journal.append(request)
    return run_id


async def started(stack: Stack, run_id: str) -> None:
    event = RunStarted(ids.run_started_id(run_id), run_id, "acme", "scripted", "[]", 5, "")
    await stack.journal.append(event, as_writer="orchestrator")


async def completed(stack: Stack, run_id: str) -> None:
    event = RunCompleted(ids.terminal_id(run_id), run_id, "acme", 1, f"answer of {run_id}", "done")
    await stack.journal.append(event, as_writer="orchestrator")


async def read_tree_stream(c: httpx.AsyncClient, run_id: str, last: str = "", limit: int = 0) -> list[dict[str, str]]:
    """Messages of the tree stream (`limit`: stop reading after that many, closing the connection)."""
    got: list[dict[str, str]] = []
    headers = {"Last-Event-ID": last} if last else {}
    async with c.stream("GET", f"/v1/runs/{run_id}/events", params={"tree": "true"}, headers=headers) as r:
        assert r.status_code == 200
        async for m in parse_sse(r.aiter_bytes()):
            if m.id is not None:
                data = orjson.loads(m.data)
                got.append({"id": m.id, "run": data["run_id"], "type": data["type"], "offset": data["offset"]})
                if limit and len(got) >= limit:
                    break
    return got


async def until_visible(c: httpx.AsyncClient, run_id: str, children: int) -> None:
    for _ in range(200):
        r = await c.get(f"/v1/runs/{run_id}")
        if r.status_code == 200 and r.json()["children_count"] >= children:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{run_id} never showed {children} children")


async def test_run_tree_api_sse_resume_and_tenant_scoping(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    async with stack.client(stack.key_a) as a, stack.client(stack.key_b) as b:
        refused = await a.post("/v1/runs", json={"task": "t", "parent_run_id": "run_x"},
                               headers={"Idempotency-Key": uuid.uuid4().hex})  # fmt: skip
        assert refused.status_code == 422 and refused.json()["error"]["field"] == "parent_run_id"
        trip = {"name": "trip", "start": "plan", "nodes": [{"id": "plan", "type": "model", "prompt": "plan {task}"}]}
        unknown = await a.post("/v1/runs", json={"task": "plan a trip", "workflow": "trip"},
                               headers={"Idempotency-Key": uuid.uuid4().hex})  # fmt: skip
        assert unknown.status_code == 422 and unknown.json()["error"]["type"] == "unknown_workflow", unknown.text
        assert (await a.post("/v1/workflows", json=trip)).status_code == 201
        created = await a.post("/v1/runs", json={"task": "plan a trip", "workflow": "trip", "workflow_version": "1"},
                               headers={"Idempotency-Key": uuid.uuid4().hex})  # fmt: skip
        assert created.status_code == 201, created.text
        root = created.json()["id"]
        first = (await read_run_once(stack.settings, root))[0].event
        assert isinstance(first, RunRequested) and (first.workflow, first.workflow_version) == ("trip", "1")

        await started(stack, root)
        c1 = await child(stack, root, 1, 1)
        await started(stack, c1)
        grandchild = await child(stack, c1, 1, 2)
        # Another tenant's request naming this root as its parent is never linked to it.
        alien = await child(stack, root, 9, 1, tenant="globex")
        await until_visible(a, c1, 1)

        # A first connection reads four events, then drops.
        before = await read_tree_stream(a, root, limit=4)
        for run_id in (grandchild,):
            await started(stack, run_id)
            await completed(stack, run_id)
        c2 = await child(stack, root, 2, 1)
        await started(stack, c2)
        await completed(stack, c2)
        await completed(stack, c1)
        await completed(stack, root)
        after = await read_tree_stream(a, root, last=before[-1]["id"])
        seen = before + after
        keys = [(m["run"], m["offset"]) for m in seen]
        assert len(keys) == len(set(keys)) == 12  # 4 runs x (requested, started, completed), once each
        assert {m["run"] for m in seen} == {root, c1, c2, grandchild}
        for run_id in (root, c1, c2, grandchild):
            assert [m["type"] for m in seen if m["run"] == run_id] == ["RunRequested", "RunStarted", "RunCompleted"]

        tree = (await a.get(f"/v1/runs/{root}/tree")).json()
        assert [n["id"] for n in tree["root"]["children"]] == [c1, c2] and tree["runs"] == 4
        assert tree["root"]["children"][0]["children"][0]["result"] == f"answer of {grandchild}"
        for run_id in (root, c1, c2, grandchild):
            assert (await b.get(f"/v1/runs/{run_id}/tree")).status_code == 404
        assert alien not in str(tree) and (await b.get(f"/v1/runs/{alien}/tree")).json()["root"]["children"] == []

        # The SDK over a connection cut mid-message: it resumes from the last whole message.
        whole = await read_tree_stream(a, root)
        cutting = CutOnce(after_bytes=1500)
        async with RunsClient(stack.url, stack.key_a, transport=cutting) as sdk:
            got = [(m.id, m.run_id) async for m in sdk.tree_events(root)]
        assert got == [(m["id"], m["run"]) for m in whole] and cutting.requests == 2

    # The operator's path (no API key): a run's children are the ones its own records name.
    call = ids.tool_call_id(root, 1, 0)
    spawn = ToolCallRequested(ids.requested_event_id(call), root, "acme", 1, call, "t", "spawn_agent", "{}", call, 1)
    await stack.journal.append(spawn, as_writer="orchestrator")
    assert await tree_from_journal(stack.settings, root, as_json=True) == 0
    shown = orjson.loads(capsys.readouterr().out)
    assert [n["id"] for n in shown["root"]["children"]] == [c1] and shown["root"]["children"][0][
        "status"
    ] == "completed"


class CutOnce(httpx.AsyncBaseTransport):
    """Real HTTP, with the first tree stream's connection failing after `after_bytes`."""

    def __init__(self, after_bytes: int) -> None:
        self.inner, self.after, self.cut, self.requests = httpx.AsyncHTTPTransport(), after_bytes, False, 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        response = await self.inner.handle_async_request(request)
        if self.cut or "tree" not in request.url.params:
            return response
        self.cut = True
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(response.status_code, headers=response.headers, stream=_Cut(response.stream, self.after))

    async def aclose(self) -> None:
        await self.inner.aclose()


class _Cut(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, after: int) -> None:
        self.inner, self.after = inner, after

    async def __aiter__(self) -> AsyncIterator[bytes]:
        sent = 0
        async for chunk in self.inner:
            if sent + len(chunk) >= self.after:
                yield chunk[: self.after - sent]
                raise httpx.ReadError("the connection was cut (test)")
            sent += len(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()
