"""The run API driven as a client would, over real HTTP, against the real broker and processors."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from agentstream.gateway.service import running_gateway
from agentstream.processors.tool_executor.builtin import bank_transfers
from agentstream.sse import parse_sse
from agentstream.stack import PAYMENTS_AUTO_APPROVED, Deployment
from agentstream.tenancy.admin import create_tenant, issue_key
from tests.harness import isolated_settings

SCENARIOS: dict[str, dict[str, Any]] = {
    "steps": {"turns": [
        *[{"delay_ms": 100, "tool_calls": [{"name": "calculator", "arguments": {"expression": f"{i} + 1"}}]} for i in range(6)],
        {"text": "six steps done"},
    ]},
    "slowpay": {"turns": [
        {"tool_calls": [{"name": "calculator", "arguments": {"expression": "1 + 1"}}]},
        {"delay_ms": 3000, "tool_calls": [{"name": "transfer_funds", "arguments": {"to_account": "X", "amount_cents": 5, "memo": "m"}}]},
        {"text": "paid"},
    ]},
}  # fmt: skip


@dataclass
class Api:
    url: str
    key_a: str
    key_b: str
    key_slow: str
    deployment: Deployment

    def client(self, key: str | None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=60)


@pytest.fixture(scope="module")
async def api(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    settings, scen = await isolated_settings(kafka_bootstrap, tmp_path_factory.mktemp("gateway"), "gw", SCENARIOS)
    await create_tenant(settings, "acme", "Acme", rate_per_s=200, burst=400, max_active_runs=100)
    await create_tenant(settings, "globex", "Globex", rate_per_s=200, burst=400, max_active_runs=100)
    await create_tenant(settings, "slowco", "Slow Co", rate_per_s=0.2, burst=2, max_active_runs=1)
    keys = [await issue_key(settings, t, "test") for t in ("acme", "globex", "slowco")]
    async with (
        Deployment(settings, [scen], policies=dict.fromkeys(("acme", "globex", "slowco"), PAYMENTS_AUTO_APPROVED)) as d,
        running_gateway(settings, port=0) as url,
    ):
        yield Api(url, keys[0], keys[1], keys[2], d)


async def create(
    client: httpx.AsyncClient, body: dict[str, Any], key: str | None = None, **params: Any
) -> httpx.Response:
    return await client.post("/v1/runs", json=body, headers={"Idempotency-Key": key or uuid.uuid4().hex}, params=params)


async def read_sse(response: httpx.Response, limit: int | None = None) -> list[dict[str, str]]:
    """The stream's messages (as `{id, event, data}`), read with the platform's one SSE parser."""
    events: list[dict[str, str]] = []
    async for message in parse_sse(response.aiter_bytes()):
        if message.id is not None:
            events.append({"id": message.id, "event": message.event or "", "data": message.data})
            if limit is not None and len(events) >= limit:
                return events
    return events


async def test_create_wait_get_and_stream(api: Api) -> None:
    async with api.client(api.key_a) as c:
        r = await create(c, {"task": "[scenario:demo] pay", "max_steps": 10}, wait=30)
        assert r.status_code == 201, r.text
        run = r.json()
        assert run["status"] == "completed" and run["final_answer"]
        assert (await c.get(f"/v1/runs/{run['id']}")).json()["status"] == "completed"
        async with c.stream("GET", f"/v1/runs/{run['id']}/events") as s:
            events = await read_sse(s)
        assert events[0]["event"] == "RunRequested" and events[-1]["event"] == "RunCompleted"
        ids = [int(e["id"]) for e in events]
        assert ids == sorted(set(ids))
        # The authorizations are streamed, their bearer tokens (for the executor only) are not.
        authorized = [json.loads(e["data"]) for e in events if e["event"] == "ToolCallAuthorized"]
        assert authorized and all(a["capability"] == "[withheld]" and a["authorized_by"] for a in authorized)


async def test_idempotent_create_under_50_concurrent_requests(api: Api) -> None:
    body = {"task": "[scenario:demo] once", "max_steps": 10}
    key = uuid.uuid4().hex
    async with api.client(api.key_a) as c:
        responses = await asyncio.gather(*(create(c, body, key) for _ in range(50)))
        assert {r.status_code for r in responses} <= {200, 201}, {r.status_code for r in responses}
        run_ids = {r.json()["id"] for r in responses}
        assert len(run_ids) == 1
        (run_id,) = run_ids
        done = await create(c, body, key, wait=30)
        assert done.json()["status"] == "completed"
        conflict = await create(c, {**body, "task": "something else"}, key)
        assert conflict.status_code == 409 and conflict.json()["error"]["field"] == "Idempotency-Key"
    entries = await api.deployment.client.read_run(run_id)
    assert sum(1 for e in entries if e.event.type_name == "RunRequested") == 1
    assert sum(1 for e in entries if e.event.type_name == "RunStarted") == 1
    transfers = [
        t for t in bank_transfers(api.deployment.settings.bank_path) if t["idempotency_key"].startswith(run_id)
    ]
    assert len(transfers) == 1  # one run, one side effect


async def test_other_tenants_see_nothing(api: Api) -> None:
    async with api.client(api.key_a) as a, api.client(api.key_b) as b:
        run = (await create(a, {"task": "[scenario:demo] secret plans", "max_steps": 10})).json()
        rid = run["id"]
        attempts = [
            await b.get(f"/v1/runs/{rid}"),
            await b.post(f"/v1/runs/{rid}/cancel", json={}),
            await b.post(f"/v1/runs/{rid}/resume"),
            await b.get(f"/v1/runs/{rid}/events"),
        ]
        for r in attempts:
            assert r.status_code == 404, (r.request.url, r.status_code)
            assert r.json() == {"error": {"type": "not_found", "message": "run not found"}}
            assert "secret" not in r.text and rid not in r.text
        listed = (await b.get("/v1/runs", params={"limit": 500})).json()["data"]
        assert all(item["id"] != rid for item in listed)
        # the same Idempotency-Key in another tenant is another run
        key = uuid.uuid4().hex
        ra = (await create(a, {"task": "[scenario:demo] x", "max_steps": 10}, key)).json()
        rb = (await create(b, {"task": "[scenario:demo] y", "max_steps": 10}, key)).json()
        assert ra["id"] != rb["id"]


async def test_sse_resume_after_a_cut_delivers_each_event_once(api: Api) -> None:
    async with api.client(api.key_a) as c:
        run = (await create(c, {"task": "[scenario:steps] go", "max_steps": 10})).json()
        path = f"/v1/runs/{run['id']}/events"
        async with c.stream("GET", path) as s:
            first = await read_sse(s, limit=4)  # then the connection is cut mid-stream
        received = list(first)
        while not received or received[-1]["event"] not in ("RunCompleted", "RunFailed", "RunCancelled"):
            async with c.stream("GET", path, headers={"Last-Event-ID": received[-1]["id"]}) as s:
                received += await read_sse(s, limit=3)
        ids = [int(e["id"]) for e in received]
        assert ids == sorted(ids) and len(ids) == len(set(ids)), "every event exactly once, in order"
        async with c.stream("GET", path) as s:
            full = await read_sse(s)
        assert [e["id"] for e in full] == [e["id"] for e in received], "no gap"


async def test_a_run_halted_at_its_step_cap_resumes_with_more_steps(api: Api) -> None:
    async with api.client(api.key_a) as c:
        running = (await create(c, {"task": "[scenario:steps] go", "max_steps": 10})).json()
        r = await c.post(f"/v1/runs/{running['id']}/resume", json={})
        assert r.status_code == 409 and r.json()["error"]["type"] == "not_resumable"

        halted = (await create(c, {"task": "[scenario:steps] go", "max_steps": 3}, wait=30)).json()
        assert halted["status"] == "halted" and halted["resumable"] and halted["steps"] == 3
        assert halted["reason"].startswith("step_cap: step cap reached: 3")
        listed = (await c.get("/v1/runs", params={"status": "halted", "limit": 500})).json()["data"]
        assert halted["id"] in [item["id"] for item in listed]
        bad = await c.post(f"/v1/runs/{halted['id']}/resume", json={"add_steps": "ten"})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "add_steps"

        r = await c.post(f"/v1/runs/{halted['id']}/resume", json={"add_steps": 10, "reason": "budget raised"})
        assert r.status_code == 202
        for _ in range(300):
            run = (await c.get(f"/v1/runs/{halted['id']}")).json()
            if run["status"] in ("completed", "failed", "cancelled"):
                break
            await asyncio.sleep(0.1)
        assert run["status"] == "completed" and run["steps"] == 7 and run["final_answer"] == "six steps done"
        async with c.stream("GET", f"/v1/runs/{halted['id']}/events") as s:
            kinds = [e["event"] for e in await read_sse(s)]
        assert kinds.index("RunHalted") < kinds.index("ResumeRequested") < kinds.index("RunCompleted")


async def test_cancel_mid_flight_starts_no_pending_side_effect(api: Api) -> None:
    async with api.client(api.key_a) as c:
        run = (await create(c, {"task": "[scenario:slowpay] go", "max_steps": 10})).json()
        rid = run["id"]
        for _ in range(100):  # until the model is thinking about the payment
            if (await c.get(f"/v1/runs/{rid}")).json()["steps"] >= 1:
                break
            await asyncio.sleep(0.1)
        r = await c.post(f"/v1/runs/{rid}/cancel", json={"reason": "changed my mind"})
        assert r.status_code == 202
        final = (
            await create(c, {"task": "[scenario:slowpay] go", "max_steps": 10}, wait=20)
        ).json()  # a fresh run completes
        assert final["id"] != rid
        await asyncio.sleep(4)  # past the model's reply that asked for the transfer
        cancelled = (await c.get(f"/v1/runs/{rid}")).json()
        assert cancelled["status"] == "cancelled" and cancelled["reason"] == "changed my mind"
        again = await c.post(f"/v1/runs/{rid}/cancel", json={})
        assert again.status_code == 409
    entries = await api.deployment.client.read_run(rid)
    assert not any(
        e.event.type_name == "ToolCallRequested" and getattr(e.event, "tool", "") == "transfer_funds" for e in entries
    )
    assert not [t for t in bank_transfers(api.deployment.settings.bank_path) if t["idempotency_key"].startswith(rid)]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "field"),
    [
        ("POST", "/v1/runs", {"json": {"task": "x"}}, 400, "Idempotency-Key"),
        ("POST", "/v1/runs", {"content": b"{not json", "headers": {"Idempotency-Key": "k1"}}, 400, "body"),
        ("POST", "/v1/runs", {"json": [1, 2], "headers": {"Idempotency-Key": "k2"}}, 422, "body"),
        ("POST", "/v1/runs", {"json": {"task": ""}, "headers": {"Idempotency-Key": "k3"}}, 422, "task"),
        (
            "POST",
            "/v1/runs",
            {"json": {"task": "x", "max_steps": 0}, "headers": {"Idempotency-Key": "k4"}},
            422,
            "max_steps",
        ),
        (
            "POST",
            "/v1/runs",
            {"json": {"task": "x", "colour": "red"}, "headers": {"Idempotency-Key": "k5"}},
            422,
            "colour",
        ),
        (
            "POST",
            "/v1/runs",
            {"json": {"task": "x"}, "headers": {"Idempotency-Key": "k6"}, "params": {"wait": "soon"}},
            400,
            "wait",
        ),
        ("POST", "/v1/runs", {"content": b"x" * (2 << 20), "headers": {"Idempotency-Key": "k7"}}, 413, None),
        ("GET", "/v1/runs", {"params": {"status": "sleeping"}}, 400, "status"),
        ("GET", "/v1/runs", {"params": {"cursor": "%%%"}}, 400, "cursor"),
        ("GET", "/v1/runs", {"params": {"limit": "0"}}, 400, "limit"),
    ],
)
async def test_bad_input_gets_a_4xx_naming_the_field(
    api: Api, method: str, path: str, kwargs: dict[str, Any], status: int, field: str | None
) -> None:
    async with api.client(api.key_a) as c:
        r = await c.request(method, path, **kwargs)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["type"] and error["message"]
    assert error.get("field") == field


async def test_authentication_rate_limit_and_concurrency_quota(api: Api) -> None:
    async with api.client(None) as anon, api.client("as_000000000000_forged") as forged:
        for c in (anon, forged):
            r = await c.get("/v1/runs")
            assert r.status_code == 401 and r.json()["error"]["type"] == "unauthenticated"
    async with api.client(api.key_slow) as slow:
        first = await create(slow, {"task": "[scenario:steps] a", "max_steps": 10})
        assert first.status_code == 201
        second = await create(slow, {"task": "[scenario:steps] b", "max_steps": 10})
        assert second.status_code == 429 and second.json()["error"]["type"] == "concurrency_quota"
        third = await slow.get("/v1/runs")
        assert third.status_code == 429 and third.json()["error"]["type"] == "rate_limited"
        assert int(third.headers["Retry-After"]) >= 1


async def test_list_is_paginated_and_filtered(api: Api) -> None:
    async with api.client(api.key_b) as c:
        made = [
            (await create(c, {"task": f"[scenario:demo] p{i}", "max_steps": 10}, wait=30)).json()["id"]
            for i in range(5)
        ]
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 2, "status": "completed"}
            if cursor:
                params["cursor"] = cursor
            page = (await c.get("/v1/runs", params=params)).json()
            seen += [item["id"] for item in page["data"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert set(made) <= set(seen) and len(seen) == len(set(seen))


async def test_openapi_document_is_served(api: Api) -> None:
    async with api.client(None) as c:
        doc = (await c.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.1") and "/v1/runs/{run_id}/events" in doc["paths"]


async def test_budgets_through_the_api_and_what_runs_cost(api: Api) -> None:
    async with api.client(api.key_a) as c, api.client(api.key_b) as other:
        bad = await create(c, {"task": "[scenario:steps] x", "budget": {"usd": -1}})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "budget.usd"
        # Each step reserves about $0.005 (1,024 output tokens at $4/M, plus the growing prompt at a
        # token per byte) and costs under $0.0001: a few of the scenario's seven steps fit, not all.
        body = {"task": "[scenario:steps] go", "tools": ["calculator"], "budget": {"usd": 0.0055}}
        halted = (await create(c, body, wait=30)).json()
        assert halted["status"] == "halted" and halted["resumable"], (
            halted["budget"],
            halted["cost_usd"],
            halted["steps"],
        )
        assert halted["reason"].startswith("budget_usd: run budget $0.005500 would be exceeded"), halted["reason"]
        assert halted["budget"]["usd"] == 0.0055 and 1 <= halted["steps"] < 7
        cost = (await c.get(f"/v1/runs/{halted['id']}/cost")).json()
        assert 0 < cost["usd"] <= 0.0055 and cost["model_calls"] >= 1 and cost["price_versions"]
        assert set(cost["by_model"]) == {"scripted"} and cost["tool_calls"] == cost["model_calls"]
        assert (await other.get(f"/v1/runs/{halted['id']}/cost")).status_code == 404  # another tenant's

        r = await c.post(f"/v1/runs/{halted['id']}/resume", json={"add_steps": 0, "add_usd": 1.0})
        assert r.status_code == 202
        for _ in range(300):
            run = (await c.get(f"/v1/runs/{halted['id']}")).json()
            if run["status"] == "completed":
                break
            await asyncio.sleep(0.1)
        assert run["status"] == "completed" and run["budget"]["usd"] == 1.0055, run
        assert cost["usd"] < run["cost_usd"] <= 1.0055

        by_tool = (await c.get("/v1/costs", params={"group_by": "tool"})).json()
        assert by_tool["group_by"] == "tool" and by_tool["total_usd"] >= run["cost_usd"]
        assert (await c.get("/v1/costs", params={"group_by": "planet"})).status_code == 400
        mine = {row["key"] for row in (await c.get("/v1/costs")).json()["data"]}
        theirs = {row["key"] for row in (await other.get("/v1/costs")).json()["data"]}
        assert halted["id"] in mine and halted["id"] not in theirs
