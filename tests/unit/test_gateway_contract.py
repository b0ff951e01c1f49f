"""The gateway's HTTP contract, in-process through `httpx.ASGITransport`: request validation, the
error shapes, authentication and scope refusals, the OpenAPI document generated from the
contract's models (and its checked-in copy), and the SDK parsing the same models. No broker: the
journal is an in-memory twin that applies what the gateway appends straight to its run index."""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest
from jsonschema import Draft202012Validator

from agentstream.cli.commands import _run_via_api, _show_via_api
from agentstream.cli.main import parser
from agentstream.client import InvalidRequest, NotFound, RateLimited, RunsClient, Unauthenticated
from agentstream.client.journal import JournalClient
from agentstream.codec import AvroCodec
from agentstream.config import ModelSettings, Settings
from agentstream.console.serve import PREFIX as CONSOLE
from agentstream.context.settings import (
    MAX_EXCLUDED_TOOLS,
    MAX_KEEP_TURNS,
    MAX_TRIGGER_TOKENS,
    MIN_TRIGGER_TOKENS,
    OFF,
)
from agentstream.context.settings import ContextSettings as ContextDefaults
from agentstream.contract.openapi import openapi_document, openapi_json
from agentstream.contract.resources import Error, Health, Run, RunPage
from agentstream.contract.routes import OPERATIONS
from agentstream.contract.vocab import RunStatus
from agentstream.events import ContextCompacted, RunCompleted, RunEvent, RunRequested, RunStarted
from agentstream.gateway.app import Caller, Gateway, GatewayConfig
from agentstream.gateway.projection import RunIndex
from agentstream.gateway.tools_api import ToolsApi
from agentstream.registry.reader import CatalogReader
from agentstream.routing.tiers import TIERS
from agentstream.tenancy.directory import ApiKey, Principal, Tenant
from agentstream.tenancy.scopes import RUNS_READ, RUNS_WRITE

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
KEY, READER, OTHER = "Bearer key-acme", "Bearer key-reader", "Bearer key-globex"


class MemoryJournal(JournalClient):
    """What the gateway appends is applied to its index at once, as the tail would after a round
    trip through the broker: the HTTP shapes are the same, in milliseconds."""

    def __init__(self, settings: Settings, index: RunIndex) -> None:
        super().__init__(settings, writer="gateway")
        self.index, self.codec, self.appended = index, AvroCodec(), list[RunEvent]()
        self._offsets = itertools.count()

    async def append(self, event: RunEvent, *, as_writer: str | None = None) -> None:
        self.appended.append(event)
        self.index._apply(0, next(self._offsets), int(time.time() * 1000), self.codec.encode(event))


class Keys:
    def __init__(self) -> None:
        acme, globex = (Tenant(t, t, 100.0, 100, 10, False) for t in ("acme", "globex"))
        self.callers = {
            KEY: Principal(acme, ApiKey("k1", "acme", "app", 1, False)),
            READER: Principal(acme, ApiKey("k2", "acme", "dash", 1, False, (RUNS_READ,))),
            OTHER: Principal(globex, ApiKey("k3", "globex", "app", 1, False, (RUNS_READ, RUNS_WRITE))),
        }

    def authenticate(self, authorization: str | None) -> Principal | None:
        return self.callers.get(authorization or "")

    async def authenticate_fresh(self, authorization: str | None) -> Principal | None:
        return self.authenticate(authorization)  # a fixed set of keys: nothing newer to read


@dataclass
class Rates:
    wait_s: float = 0.0

    def retry_after(self, caller: Caller) -> float:
        return self.wait_s


@dataclass
class Api:
    client: httpx.AsyncClient
    journal: MemoryJournal
    rates: Rates
    transport: httpx.ASGITransport
    sent: list[httpx.Request] = field(default_factory=list)
    tools: ToolsApi | None = None  # the registry the gateway reads (fed directly: follows no topic)

    def sdk(self, key: str = KEY) -> RunsClient:
        return RunsClient("http://gateway", key.removeprefix("Bearer "), transport=self.transport)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    settings = Settings("127.0.0.1:1", "contract", tmp_path, ModelSettings(), kafka_extra={})
    index = RunIndex(settings)
    journal = MemoryJournal(settings, index)
    rates = Rates()
    tools = ToolsApi(settings, CatalogReader(settings), follows_topics=False)
    config = GatewayConfig(max_body_bytes=4096, max_wait_s=2.0, read_your_write_s=1.0)
    gateway = Gateway(index, journal, Keys(), rates, config, tools=tools)
    transport = httpx.ASGITransport(app=gateway.app())
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway", headers={"Authorization": KEY}) as c:
        yield Api(c, journal, rates, transport, tools=tools)


async def create(api: Api, body: object, key: str | None = "k-1", **params: str) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return await api.client.post("/v1/runs", content=orjson.dumps(body), headers=headers, params=params)


def refused(response: httpx.Response, status: int, type_: str, field: str | None = None) -> str:
    """The refusal's message, after checking its status and the documented error shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = Error.model_validate_json(response.content).error
    assert (error.type, error.field) == (type_, field), response.text
    assert set(response.json()["error"]) <= {"type", "message", "field", "unknown", "available"}
    return error.message


# -- the document ---------------------------------------------------------------------------------


async def test_the_served_document_is_generated_from_the_contract(api: Api) -> None:
    served = (await api.client.get("/openapi.json")).json()
    assert served == openapi_document(2.0)
    wait = next(p for p in served["paths"]["/v1/runs"]["post"]["parameters"] if p["name"] == "wait")
    assert wait["schema"]["maximum"] == 2.0  # this gateway's own limit
    assert served["components"]["schemas"]["RunStatus"]["enum"] == [s.value for s in RunStatus]


def test_the_checked_in_document_is_the_generated_one() -> None:
    # Regenerate with: python -m agentstream.contract.openapi > docs/openapi.json
    assert DOCUMENT.read_bytes() == openapi_json(), "docs/openapi.json is stale: regenerate it"


async def test_every_route_is_a_documented_operation(api: Api) -> None:
    app = api.transport.app
    mounted = {(m, r.path) for r in app.routes for m in (r.methods or ()) if m != "HEAD"}  # type: ignore[attr-defined]
    # The web console's static pages are no API operation (tests/unit/test_console_static.py).
    mounted = {(m, path) for m, path in mounted if path.split("/")[1] != CONSOLE.strip("/")}
    documented = {(m.upper(), path) for path, item in openapi_document()["paths"].items() for m in item}
    assert mounted - {("GET", "/openapi.json")} == documented == {(op.method, op.path) for op in OPERATIONS}
    for path, item in openapi_document()["paths"].items():
        for operation in item.values():
            for answer in operation["responses"].values():
                for media in answer.get("content", {}).values():
                    name = media["schema"]["$ref"].rsplit("/", 1)[1]
                    assert name in openapi_document()["components"]["schemas"], (path, name)


# -- who may call -------------------------------------------------------------------------------


async def test_no_key_is_a_401_with_a_challenge_and_health_is_public(api: Api) -> None:
    r = await api.client.get("/v1/runs", headers={"Authorization": "Bearer nope"})
    assert "API key" in refused(r, 401, "unauthenticated")
    assert r.headers["WWW-Authenticate"] == "Bearer"
    health = await api.client.get("/healthz", headers={"Authorization": ""})
    assert Health.model_validate_json(health.content).ok
    with pytest.raises(Unauthenticated):
        await api.sdk("Bearer wrong").get("run_x")


async def test_a_key_without_the_scope_is_refused_naming_it(api: Api) -> None:
    headers = {"Idempotency-Key": "x", "Authorization": READER}
    r = await api.client.post("/v1/runs", json={"task": "t"}, headers=headers)
    assert "runs:write" in refused(r, 403, "missing_scope")
    assert (await api.client.get("/v1/runs", headers={"Authorization": READER})).status_code == 200


async def test_the_rate_limit_is_a_429_with_retry_after(api: Api) -> None:
    api.rates.wait_s = 2.2
    r = await api.client.get("/v1/runs")
    refused(r, 429, "rate_limited")
    assert r.headers["Retry-After"] == "3"
    with pytest.raises(RateLimited) as limited:
        await api.sdk().get("run_x")
    assert limited.value.retry_after == 3.0


# -- request validation ---------------------------------------------------------------------------


async def test_query_parameters_are_validated_by_the_query_models(api: Api) -> None:
    assert "unknown query parameter: colour" in refused(await api.client.get("/v1/runs?colour=red"), 400,
                                                        "invalid_parameter", "colour")  # fmt: skip
    assert "queued" in refused(await api.client.get("/v1/runs?status=done"), 400, "invalid_parameter", "status")
    for bad in ("abc", "5_0", " 5", "0", "501", "1e2"):
        refused(await api.client.get("/v1/runs", params={"limit": bad}), 400, "invalid_parameter", "limit")
    refused(await api.client.get("/v1/runs?cursor=zz"), 400, "invalid_parameter", "cursor")
    refused(await api.client.get("/v1/costs?group_by=tenant"), 400, "invalid_parameter", "group_by")
    refused(await api.client.get("/v1/costs?since_ms=-1"), 400, "invalid_parameter", "since_ms")
    for wait in ("nan", "-1", "2.5"):
        refused(await create(api, {"task": "t"}, wait=wait), 400, "invalid_parameter", "wait")
    assert (await api.client.get("/v1/runs?status=halted&limit=%2B5")).status_code == 200


async def test_bodies_are_validated_by_the_request_models(api: Api) -> None:
    refused(await create(api, {"task": "t"}, key=None), 400, "invalid_header", "Idempotency-Key")
    bad_json = await api.client.post("/v1/runs", content=b"{", headers={"Idempotency-Key": "k"})
    assert "not valid JSON" in refused(bad_json, 400, "invalid_json", "body")
    refused(await create(api, ["task"]), 422, "invalid_body", "body")
    refused(await create(api, {}), 422, "invalid_field", "task")
    assert "greater than or equal to 0" in refused(await create(api, {"task": "t", "budget": {"usd": -1}}), 422,
                                                   "invalid_field", "budget.usd")  # fmt: skip
    refused(await create(api, {"task": "t", "max_steps": "5"}), 422, "invalid_field", "max_steps")  # strict
    refused(await create(api, {"task": "t", "colour": "red"}), 422, "invalid_field", "colour")
    too_big = await create(api, {"task": "x" * 5000})
    refused(too_big, 413, "body_too_large")
    unknown = await create(api, {"task": "t", "tools": ["calculatr"]})
    assert "calculatr" in refused(unknown, 422, "unknown_tool", "tools")
    assert unknown.json()["error"]["unknown"] == ["calculatr"]
    assert not api.journal.appended  # nothing refused reached the journal


async def test_unknown_paths_and_methods_get_the_error_shape(api: Api) -> None:
    refused(await api.client.get("/v2/nothing"), 404, "not_found")
    refused(await api.client.delete("/v1/runs"), 405, "method_not_allowed")
    refused(await api.client.get("/v1/runs/run_missing"), 404, "not_found")


# -- answers built from the models, parsed by the SDK ---------------------------------------------


async def test_create_show_list_and_idempotency_speak_the_contract(api: Api) -> None:
    body = {"task": "sum", "max_steps": 3, "labels": {"team": "a"}, "budget": {"usd": 1.5}}
    first = await create(api, body)
    assert first.status_code == 201 and first.headers["Location"].startswith("/v1/runs/run_")
    run = Run.model_validate_json(first.content)
    assert (run.status, run.max_steps, run.budget.usd, run.events_url) == (
        RunStatus.QUEUED, 3, 1.5, f"/v1/runs/{run.id}/events"
    )  # fmt: skip
    again = await create(api, body)
    assert again.status_code == 200 and Run.model_validate_json(again.content) == run
    refused(await create(api, {**body, "task": "other"}), 409, "idempotency_conflict", "Idempotency-Key")
    page = RunPage.model_validate_json((await api.client.get("/v1/runs?status=queued")).content)
    assert [r.id for r in page.data] == [run.id] and page.next_cursor is None
    # Another tenant's run does not exist for this one.
    refused(await api.client.get(f"/v1/runs/{run.id}", headers={"Authorization": OTHER}), 404, "not_found")


async def test_the_sdk_parses_the_same_models(api: Api) -> None:
    async with api.sdk() as sdk:
        runs = [await sdk.create(f"task {i}", idempotency_key=f"sdk-{i}") for i in range(3)]
        assert all(isinstance(r, Run) and r.status == RunStatus.QUEUED and not r.status.settled for r in runs)
        assert await sdk.get(runs[0].id) == runs[0]
        listed = [r.id for r in sorted(runs, key=lambda r: (r.created_at_ms, r.id))]  # the list's order
        page = await sdk.list_page(limit=2)
        assert [r.id for r in page.data] == listed[:2] and page.next_cursor
        assert [r.id async for r in sdk.list(limit=2)] == listed
        with pytest.raises(NotFound):
            await sdk.get("run_missing")
        cancelled = await sdk.cancel(runs[0].id, "no longer needed")
        assert cancelled.id == runs[0].id and api.journal.appended[-1].type_name == "CancelRequested"
        report = await sdk.costs()
        assert report.group_by == "run" and report.total_usd == 0.0


async def test_the_sdk_refuses_what_the_contract_refuses_before_sending(api: Api) -> None:
    async with api.sdk() as sdk:
        with pytest.raises(InvalidRequest) as bad:
            await sdk.create("t", max_steps=0)
    assert (bad.value.status, bad.value.field) == (422, "max_steps")
    assert not api.journal.appended


async def test_the_event_stream_is_read_by_the_one_sse_parser(api: Api) -> None:
    async with api.sdk() as sdk:
        run = await sdk.create("stream me", idempotency_key="stream")
        await api.journal.append(RunStarted(f"s:{run.id}", run.id, "acme", "scripted", "[]", 20, ""))
        await api.journal.append(RunCompleted(f"c:{run.id}", run.id, "acme", 0, "the answer", "done"))
        events = [m async for m in sdk.events(run.id)]
        assert [m.type for m in events] == ["RunRequested", "RunStarted", "RunCompleted"]
        assert [m.id for m in events] == [0, 1, 2] and events[-1].data["offset"] == 2
        assert isinstance(events[-1].event, RunCompleted)
        resumed = [m async for m in sdk.events(run.id, last_event_id="1")]
        assert [m.id for m in resumed] == [2]
        done = await sdk.get(run.id)
        assert done.status == RunStatus.COMPLETED and done.status.terminal and done.final_answer == "the answer"


async def test_answers_conform_to_the_served_document(api: Api) -> None:
    document = openapi_document(2.0)

    def check(response: httpx.Response, method: str, path: str) -> None:
        answer = document["paths"][path][method]["responses"][str(response.status_code)]
        ref = answer["content"]["application/json"]["schema"]["$ref"]
        validator = Draft202012Validator({"$ref": ref, "components": document["components"]})
        assert not list(validator.iter_errors(response.json())), (method, path, response.text)
        for header in answer.get("headers", {}):
            assert header in response.headers, (method, path, header)

    run = await create(api, {"task": "t", "budget": {"tokens": 10}})
    check(run, "post", "/v1/runs")
    run_id = run.json()["id"]
    check(await api.client.get(f"/v1/runs/{run_id}"), "get", "/v1/runs/{run_id}")
    check(await api.client.get("/v1/runs?limit=1"), "get", "/v1/runs")
    check(await api.client.get(f"/v1/runs/{run_id}/cost"), "get", "/v1/runs/{run_id}/cost")
    check(await api.client.get("/v1/costs?group_by=model"), "get", "/v1/costs")
    check(await api.client.get("/v1/tools"), "get", "/v1/tools")
    check(await api.client.get("/healthz"), "get", "/healthz")
    check(await api.client.post(f"/v1/runs/{run_id}/cancel"), "post", "/v1/runs/{run_id}/cancel")
    # Refusals: each status the document lists for the operation, with its headers.
    check(await api.client.get("/v1/runs?limit=0"), "get", "/v1/runs")
    check(await api.client.get("/v1/runs", headers={"Authorization": ""}), "get", "/v1/runs")
    check(await create(api, {}, key="empty"), "post", "/v1/runs")
    check(await create(api, {"task": "other"}), "post", "/v1/runs")  # 409: the key's earlier body differs
    check(await create(api, {"task": "x" * 5000}, key="big"), "post", "/v1/runs")
    check(await api.client.get("/v1/runs/run_nope"), "get", "/v1/runs/{run_id}")
    check(await api.client.post(f"/v1/runs/{run_id}/resume"), "post", "/v1/runs/{run_id}/resume")
    check(await api.client.get("/v1/tools/nope"), "get", "/v1/tools/{name}")
    api.rates.wait_s = 1.0
    check(await api.client.get("/v1/tools"), "get", "/v1/tools")


# -- context settings: given on create, pinned at the start, compactions counted -------------------


async def test_context_settings_are_journaled_as_given_and_the_run_shows_what_it_pinned(
    api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    context: dict[str, object] = {"mode": "on", "trigger_tokens": 32_000.0}
    body = {"task": "long research", "context": context}
    run = Run.model_validate_json((await create(api, body, key="ctx-1")).content)
    requested = api.journal.appended[-1]
    assert isinstance(requested, RunRequested)
    # Only the fields given: the tenant's defaults fill in the rest at the run's start.
    assert orjson.loads(requested.context_json) == {"mode": "on", "trigger_tokens": 32_000}
    assert run.context is None  # nothing pinned before the start
    # The same fields spelled out with a default are another request (the tenant's default may differ).
    spelled = {**body, "context": {**context, "keep_turns": 1}}
    refused(await create(api, spelled, key="ctx-1"), 409, "idempotency_conflict", "Idempotency-Key")
    pinned = '{"mode":"on","trigger_tokens":32000,"keep_turns":3,"summarize":true,"summary_tier":"small",' \
             '"exclude_tools":["search"]}'  # fmt: skip
    await api.journal.append(RunStarted(f"{run.id}/started", run.id, "acme", "scripted", "[]", 5, "",
                                        context_json=pinned))  # fmt: skip
    for n, (before, after) in enumerate([(70_000, 20_000), (41_000, 9_000)], start=1):
        kind = "summarize" if n == 2 else "clear"
        await api.journal.append(
            ContextCompacted(f"{run.id}/c{n}", run.id, "acme", 2 * n, n, kind, 4, '["h1"]', "", "", before, after, "")
        )
    shown = Run.model_validate_json((await api.client.get(f"/v1/runs/{run.id}")).content)
    assert shown.context is not None
    assert (shown.context.mode, shown.context.keep_turns, shown.context.exclude_tools) == ("on", 3, ["search"])
    assert shown.context.compactions == 2 and shown.context.last_compaction is not None
    assert shown.context.last_compaction.model_dump() == {
        "step": 4, "kind": "summarize", "tokens_before": 41_000, "tokens_after": 9_000
    }  # fmt: skip
    async with api.sdk() as sdk:  # `agentstream runs show` through the API
        assert await _show_via_api(sdk, run.id, as_json=False) == 0
    assert "context on: 2 compaction(s), the last ~41000 -> ~9000 tokens" in capsys.readouterr().out
    # A run started without settings shows the platform's: off.
    plain = Run.model_validate_json((await create(api, {"task": "short"}, key="ctx-2")).content)
    assert api.journal.appended[-1].context_json == ""  # type: ignore[attr-defined]
    await api.journal.append(RunStarted(f"{plain.id}/started", plain.id, "acme", "scripted", "[]", 5, ""))
    off = Run.model_validate_json((await api.client.get(f"/v1/runs/{plain.id}")).content).context
    assert off is not None and (off.mode, off.trigger_tokens, off.compactions, off.last_compaction) == (
        "off", 64_000, 0, None
    )  # fmt: skip


async def test_bad_context_settings_are_a_422_naming_the_field(api: Api) -> None:
    for context, where, says in [
        ({"trigger_tokens": 10}, "context.trigger_tokens", "greater than or equal to 1000"),
        ({"keep_turns": 2.5}, "context.keep_turns", "integer"),
        ({"mode": "auto"}, "context.mode", "'off' or 'on'"),
        ({"summary_tier": "huge"}, "context.summary_tier", "'small' or 'frontier'"),
        ({"summarize": "yes"}, "context.summarize", "boolean"),
        ({"exclude_tools": [""]}, "context.exclude_tools.0", "at least 1 character"),
        ({"exclude_tools": ["t"] * 65}, "context.exclude_tools", "at most 64 items"),
        ({"trigger": 5}, "context.trigger", "Extra inputs"),
        ("on", "context", "ContextSettings"),
    ]:
        message = refused(await create(api, {"task": "t", "context": context}, key="bad"), 422, "invalid_field", where)
        assert says in message, message
    assert not api.journal.appended
    # The SDK refuses the same before sending, and sends only the fields given.
    async with api.sdk() as sdk:
        with pytest.raises(InvalidRequest) as bad:
            await sdk.create("t", context={"keep_turns": 51})
        assert (bad.value.status, bad.value.field) == (422, "context.keep_turns")
        assert not api.journal.appended
        await sdk.create("t", idempotency_key="sdk-ctx", context={"summarize": False, "exclude_tools": ["a", "a"]})
    assert orjson.loads(api.journal.appended[-1].context_json) == {  # type: ignore[attr-defined]
        "summarize": False, "exclude_tools": ["a", "a"]
    }  # fmt: skip


def test_the_document_describes_every_context_setting_as_the_orchestrator_bounds_it() -> None:
    schema = openapi_document()["components"]["schemas"]["ContextSettings"]
    assert schema["additionalProperties"] is False
    fields = schema["properties"]
    assert set(fields) == {f.name for f in dataclasses.fields(ContextDefaults)}
    assert all(spec.get("description") for spec in fields.values())
    assert (fields["trigger_tokens"]["minimum"], fields["trigger_tokens"]["maximum"]) == (
        MIN_TRIGGER_TOKENS, MAX_TRIGGER_TOKENS
    )  # fmt: skip
    assert fields["summary_tier"]["enum"] == list(TIERS)
    bounds = (fields["exclude_tools"]["maxItems"], fields["keep_turns"]["maximum"])
    assert bounds == (MAX_EXCLUDED_TOOLS, MAX_KEEP_TURNS)
    # The defaults the document states are the platform's.
    assert {name: spec.get("default") for name, spec in fields.items() if name != "exclude_tools"} == {
        f.name: getattr(OFF, f.name) for f in dataclasses.fields(ContextDefaults) if f.name != "exclude_tools"
    }


async def test_run_with_compact_through_the_api_sends_the_settings_given(
    api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parser().parse_args(["run", "research", "--context", '{"keep_turns": 2}', "--compact"])
    async with api.sdk() as sdk:
        assert await _run_via_api(sdk, args) == 0
    requested = api.journal.appended[-1]
    assert isinstance(requested, RunRequested) and capsys.readouterr().out.strip() == requested.run_id
    assert orjson.loads(requested.context_json) == {"keep_turns": 2, "mode": "on"}
