"""Schemathesis against the run API's own OpenAPI document, over real HTTP, against the real broker
and processors: no input may produce a 5xx, and every answer must be one the document describes
(documented status code, content type, headers and body schema). Both positive cases (valid by the
document: must be accepted) and negative ones (invalid: must be refused with a 4xx) are generated.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.generation.case import Case
from schemathesis.schemas import APIOperation, BaseSchema

from agentstream.config import ModelSettings, Settings
from agentstream.gateway.app import GatewayConfig
from agentstream.gateway.service import running_gateway
from agentstream.netguard import ALLOW_PRIVATE_ENV
from agentstream.stack import PAYMENTS_AUTO_APPROVED, Deployment, ensure_topics
from agentstream.tenancy.admin import create_tenant, issue_key

MAX_EXAMPLES = 30  # per operation and generation mode
# The gateway under test documents `wait` up to its configured maximum; a small one keeps each
# generated `POST /v1/runs?wait=...` short without excluding the parameter from generation.
MAX_WAIT_S = 1.0
# Every operation in the document is exercised; test_every_documented_operation_is_fuzzed keeps
# this list and the document in step.
OPERATIONS = [
    "POST /v1/runs",
    "GET /v1/runs",
    "GET /v1/runs/{run_id}",
    "POST /v1/runs/{run_id}/cancel",
    "POST /v1/runs/{run_id}/resume",
    "GET /v1/runs/{run_id}/events",
    "GET /v1/runs/{run_id}/events/{offset}",
    "GET /v1/runs/{run_id}/tree",
    "GET /v1/runs/{run_id}/cost",
    "GET /v1/costs",
    "GET /v1/costs/series",
    "GET /v1/approvals",
    "GET /v1/approvals/{approval_id}",
    "POST /v1/approvals/{approval_id}",
    "GET /v1/tools",
    "POST /v1/tools",
    "GET /v1/tools/{name}",
    "POST /v1/tools/{name}/disable",
    "POST /v1/tools/{name}/enable",
    "POST /v1/audit/query",
    "GET /v1/memory",
    "GET /v1/memory/export",
    "GET /v1/workflows",
    "POST /v1/workflows",
    "GET /v1/workflows/{name}",
    "GET /healthz",
]
# Operations open to anyone (no API key): they take no input, so there is nothing to negate.
PUBLIC = {"GET /healthz"}


# Invalid input must be refused with a 4xx: schemathesis' default list for that, plus 413, the
# documented answer to a body over the size limit (negative cases make over-long `task`s that are).
# "5xx" stays listed only because the not_a_server_error check, which always runs, reports those.
CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429, "5xx"]
            }
        }
    }
)


@dataclass
class Target:
    url: str
    headers: dict[str, str]
    finished_run: str  # a run that has ended: run-scoped operations then reach their 200/409 answers
    schema: BaseSchema


@contextlib.asynccontextmanager
async def _undo(patch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    try:
        yield
    finally:
        patch.undo()


@pytest.fixture(scope="module")
async def target(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Target]:
    home = tmp_path_factory.mktemp("apischema")
    settings = Settings(kafka_bootstrap, f"as{uuid.uuid4().hex[:8]}", home / "home", ModelSettings())
    settings.home.mkdir()
    await ensure_topics(settings)
    await create_tenant(settings, "fuzz", "Fuzz", rate_per_s=1000, burst=2000, max_active_runs=10_000)
    # The default scopes, `audit:read` and `memory:read`, so audit queries and memory exports are
    # fuzzed past the scope check (no warehouse here: a well-formed query is a documented 404, a
    # malformed one a 400).
    scopes = ["runs:read", "runs:write", "tools:write", "audit:read", "memory:read"]
    key = await issue_key(settings, "fuzz", "schemathesis", scopes=scopes)
    headers = {"Authorization": f"Bearer {key}"}
    config = GatewayConfig(max_wait_s=MAX_WAIT_S)
    # Which addresses a tool may reach is the operator's setting, not the document's: an egress
    # entry the document allows (`2`, `0.6`) may spell an internal address that the platform
    # refuses by default (tests/test_attack_internal_egress.py). Exempting every address here keeps
    # this test about the document; `localhost` names stay refused, and none is generated here.
    exempt = pytest.MonkeyPatch()
    exempt.setenv(ALLOW_PRIVATE_ENV, "0.0.0.0/0,::/0")
    async with (
        _undo(exempt),
        Deployment(settings, policies={"fuzz": PAYMENTS_AUTO_APPROVED}) as _d,
        running_gateway(settings, port=0, config=config) as url,
    ):
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
            created = await client.post(
                "/v1/runs", json={"task": "[scenario:demo] seed"}, headers={"Idempotency-Key": uuid.uuid4().hex}
            )
            assert created.status_code == 201, created.text
            run_id = created.json()["id"]
            registered = await client.post("/v1/workflows", json=VALID_WORKFLOWS[0])
            assert registered.status_code == 201, registered.text
            deadline = time.monotonic() + 60
            while (await client.get(f"/v1/runs/{run_id}")).json()["status"] not in ("completed", "failed"):
                assert time.monotonic() < deadline, "the seed run did not finish"
                await asyncio.sleep(0.2)
        schema = await asyncio.to_thread(schemathesis.openapi.from_url, f"{url}/openapi.json", config=CONFIG)
        yield Target(url, headers, run_id, schema)


# Message-framing headers are the HTTP server's (uvicorn/h11), not the API's: an invalid one (negative
# cases generate e.g. an empty Content-Length) is refused with a plain-text 400 before the request
# reaches the application, so the document cannot describe that answer. Only such cases are left out.
FRAMING_HEADERS = {"content-length", "transfer-encoding", "host", "connection", "expect", "upgrade", "te"}


def _sends_framing_headers(case: Case[Any]) -> bool:
    return any(name.lower() in FRAMING_HEADERS for name in case.headers or {})


def _query_is_sent_as_generated(case: Case[Any]) -> bool:
    # A query parameter whose value is an empty list is left out of the URL by the HTTP client, so
    # the request sent is not the negative case generated (an extra parameter "accepted" unseen).
    return not any(value == [] for value in (case.query or {}).values())


# Which tools exist is the registry's state, not the document's: a run request naming a tool the
# tenant lacks is refused at the door (422 unknown_tool, tests/test_door_edges.py), so valid run
# requests name tools the fuzzed tenant has.
KNOWN_TOOLS = ("calculator", "get_current_time", "lookup")


def _with_known_tools(case: Case[Any]) -> Case[Any]:
    tools = case.body.get("tools") if isinstance(case.body, dict) else None
    if isinstance(case.body, dict) and isinstance(tools, list):
        case.body["tools"] = [KNOWN_TOOLS[len(str(name)) % len(KNOWN_TOOLS)] for name in tools]
    # Likewise which workflows exist: a run naming one the tenant has not registered is refused at
    # the door (422 unknown_workflow), so valid run requests name the one the fixture registered.
    # (A version without its workflow is refused too: a rule between two fields the document leaves out.)
    if isinstance(case.body, dict) and ("workflow" in case.body or "workflow_version" in case.body):
        case.body["workflow"] = VALID_WORKFLOWS[0]["name"]
        if "workflow_version" in case.body:
            case.body["workflow_version"] = "1"
    return case


# Whether a document is a workflow (its nodes reachable, its edges naming nodes, its cycles bounded)
# is the validator's business, not the schema's (422 invalid_workflow): valid registrations send
# these (registering one again answers 200 with its latest version).
VALID_WORKFLOWS: list[dict[str, Any]] = [
    {"name": "fuzzed", "start": "a", "nodes": [{"id": "a", "type": "model", "prompt": "plan {task}"}]},
    {"name": "fuzzed-tool", "start": "t",
     "nodes": [{"id": "t", "type": "tool", "tool": "calculator", "arguments": {"expression": "1 + 1"}}]},
]  # fmt: skip


def _with_valid_workflow(case: Case[Any]) -> Case[Any]:
    case.body = VALID_WORKFLOWS[len(str(case.body)) % len(VALID_WORKFLOWS)]
    return case


# Whether a string is SQL the audit tables can answer is the query engine's business, not the
# document's (a string the document allows is refused with 400 invalid_query): valid audit queries
# send SQL. No warehouse runs here, so they get the documented 404 no_audit_record.
VALID_SQL = ("SELECT 1", "SELECT count(*) FROM events", "SELECT * FROM runs LIMIT 3")


def _with_valid_sql(case: Case[Any]) -> Case[Any]:
    sql = case.body.get("sql") if isinstance(case.body, dict) else None
    if isinstance(case.body, dict) and isinstance(sql, str):
        case.body["sql"] = VALID_SQL[len(sql) % len(VALID_SQL)]
    return case


def _fuzz(target: Target, operation: APIOperation[Any, Any, Any, Any], mode: GenerationMode) -> None:
    strategy = operation.as_strategy(generation_mode=mode)
    if mode == GenerationMode.POSITIVE and (operation.method.upper(), operation.path) == ("POST", "/v1/runs"):
        strategy = strategy.map(_with_known_tools)
    if mode == GenerationMode.POSITIVE and (operation.method.upper(), operation.path) == ("POST", "/v1/audit/query"):
        strategy = strategy.map(_with_valid_sql)
    if mode == GenerationMode.POSITIVE and (operation.method.upper(), operation.path) == ("POST", "/v1/workflows"):
        strategy = strategy.map(_with_valid_workflow)
    if "run_id" in operation.path:
        strategy = st.one_of(
            strategy, operation.as_strategy(generation_mode=mode, path_parameters={"run_id": target.finished_run})
        )
    strategy = strategy.filter(lambda case: not _sends_framing_headers(case) and _query_is_sent_as_generated(case))

    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def check(case: Case[Any]) -> None:
        # The event stream of the finished run ends with its terminal event (or at once when
        # Last-Event-ID is already past it).
        started = time.monotonic()
        case.call_and_validate(base_url=target.url, headers=target.headers, timeout=10)
        # No answer may hang: `wait` is at most MAX_WAIT_S, and every stream fuzzed here has ended.
        assert time.monotonic() - started < MAX_WAIT_S + 4, f"{case.method} {case.formatted_path} took too long"

    check()


async def test_every_documented_operation_is_fuzzed(target: Target) -> None:
    async with httpx.AsyncClient(base_url=target.url) as client:
        document = (await client.get("/openapi.json")).json()
    documented = {f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item}
    assert documented == set(OPERATIONS)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("label", "mode"),
    [
        (label, mode)
        for label in OPERATIONS
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        if not (label in PUBLIC and mode == GenerationMode.NEGATIVE)
    ],
    ids=lambda value: value.value if isinstance(value, GenerationMode) else value,
)
async def test_operation_conforms_to_the_document(target: Target, label: str, mode: GenerationMode) -> None:
    method, path = label.split(" ")
    operation = target.schema[path][method]
    # Schemathesis' client is synchronous; the gateway serves on this event loop, so it runs in a thread.
    await asyncio.to_thread(_fuzz, target, operation, mode)


async def test_unauthenticated_calls_get_a_documented_401_with_a_challenge(target: Target) -> None:
    async with httpx.AsyncClient(base_url=target.url, timeout=10) as client:
        for label in OPERATIONS:
            method, path = label.split(" ")
            operation = target.schema[path][method]
            r = await client.request(method, path.replace("{run_id}", target.finished_run))
            if label in PUBLIC:
                assert r.status_code == 200, (label, r.text)
                operation.validate_response(r)
                continue
            assert r.status_code == 401, (label, r.text)
            assert r.headers["WWW-Authenticate"] == "Bearer"
            assert r.json()["error"]["type"] == "unauthenticated"
            operation.validate_response(r)  # documented status, headers and body


async def test_a_stream_resumed_past_the_terminal_event_ends_at_once(target: Target) -> None:
    # Found by the fuzzing above: such a stream used to stay open, sending keep-alives forever.
    async with httpx.AsyncClient(base_url=target.url, headers=target.headers, timeout=5) as client:
        r = await client.get(f"/v1/runs/{target.finished_run}/events", headers={"Last-Event-ID": "999999999"})
    assert r.status_code == 200 and r.text == ""
