"""Issue 13, finding 5 (ReDoS from tenant JSON Schemas) and the registry and stream bounds of
finding 9, attacked for real: a tenant registers (or smuggles past registration) schemas whose
patterns backtrack, that are too large or too deep, or that reach outside themselves; registers more
versions than allowed; and holds event streams open on a halted run and past its key's revocation.
Against the real broker, every processor as its own process, the gateway over HTTP, and the
scripted model. The attacks themselves are in bench/attacks/redos.py."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest

from agentstream.gateway.service import running_gateway
from agentstream.registry.reader import CatalogReader
from agentstream.stack import Deployment
from agentstream.tenancy.admin import create_tenant, issue_key
from bench.attacks import redos
from bench.attacks.redos import RedosTarget
from tests.harness import isolated_settings


@pytest.fixture(scope="module")
async def target(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RedosTarget]:
    settings, scen = await isolated_settings(kafka_bootstrap, tmp_path_factory.mktemp("redos"), "rd", redos.SCENARIOS)
    for tenant in ("evil", "good", "flood"):
        await create_tenant(settings, tenant, tenant.title(), rate_per_s=500, burst=1000, max_active_runs=50)
    evil_key = await issue_key(settings, "evil", "attacker")
    good_key = await issue_key(settings, "good", "bystander")
    async with Deployment(settings, [scen]) as d, running_gateway(settings, port=0) as url:
        yield RedosTarget(settings, d, url, evil_key, good_key)


async def _tool_names(target: RedosTarget, owner: str) -> set[str]:
    async with CatalogReader(target.settings) as reader:
        return {name for (o, name) in reader.catalog.versions if o == owner}


async def test_a_backtracking_pattern_fails_validation_fast_while_other_tenants_runs_step(target: RedosTarget) -> None:
    timing = await redos.validation_timing(redos.schema(redos.BACKTRACKING), {"s": redos.EVIL_INPUT})
    assert timing is not None, "validating the call did not finish within 10 s"
    assert timing["refused"] and timing["gate"] == "deny"
    assert timing["orchestrator_s"] < 0.1 and timing["gate_s"] < 0.1, timing
    assert not await redos.backtracking_pattern(target)


@pytest.mark.parametrize(
    ("input_schema", "says"),
    [
        (redos.schema("^(a)\\1$"), "RE2"),  # a backreference
        (redos.schema(redos.BACKTRACKING_ONLY), "RE2"),  # lookahead
        ({"type": "object", "patternProperties": {"(?<=x)y": {}}}, "RE2"),  # lookbehind, in a key
        (redos.schema("a" * 1001), "at most 1000"),
        (redos.too_large(), "bytes of JSON; at most 32768"),
        (redos.too_deep(), "levels deep"),
        ({"type": "object", "properties": {"s": {"$ref": "http://169.254.169.254/latest/meta-data"}}}, "only local"),
        ({"type": "object", "properties": {"s": {"type": "strng"}}}, "not valid JSON Schema"),
    ],
    ids=[
        "backreference",
        "lookahead",
        "lookbehind-key",
        "long-pattern",
        "too-large",
        "too-deep",
        "remote-ref",
        "invalid",
    ],
)
async def test_schemas_the_platform_will_not_run_are_refused_with_a_clear_422(
    target: RedosTarget, input_schema: dict[str, object], says: str
) -> None:
    before = await _tool_names(target, "evil")
    r = await redos.register(target, redos.tool_body("refused", input_schema))
    assert r.status_code == 422, r.text[:300]
    assert says in r.json()["error"]["message"], r.text[:300]
    assert await _tool_names(target, "evil") == before  # nothing reached the registry


async def test_a_smuggled_schema_neither_stalls_the_processors_nor_poisons_their_restart(target: RedosTarget) -> None:
    # A pattern RE2 refuses: the call is refused as "a schema this platform will not run"; then the
    # orchestrator and the gate are restarted with their state wiped, so they replay the poison.
    assert not await redos.smuggled_schema(target, redos.BACKTRACKING_ONLY)
    # A pattern RE2 runs in linear time: the call simply fails validation.
    assert not await redos.smuggled_schema(target, redos.BACKTRACKING, restart=False)


async def test_tool_versions_are_capped_per_tool_and_per_tenant(target: RedosTarget) -> None:
    assert not await redos.version_flood(target, name="capped")
    last = await redos.register(target, redos.tool_body("capped", {"type": "object"}, description="one more"))
    assert last.status_code == 422, last.text[:300]
    assert f"already has {redos.MAX_VERSIONS_PER_TOOL} versions" in last.json()["error"]["message"]
    async with CatalogReader(target.settings) as reader:
        assert len(reader.catalog.versions[("evil", "capped")]) == redos.MAX_VERSIONS_PER_TOOL
    # Past registration: the projection every process holds keeps no more than the tenant's cap...
    assert not await redos.smuggled_version_flood(target, owner="flood")
    # ...and registration through the API then refuses the tenant's next version, saying why.
    target = dataclasses.replace(target, evil_key=await issue_key(target.settings, "flood", "flooder"))
    async with target.client(target.evil_key) as c:
        await redos.until_known(c)
    r = await redos.register(target, redos.tool_body("one_more", {"type": "object"}))
    assert r.status_code == 422, r.text[:300]
    assert f"already has {redos.MAX_VERSIONS_PER_TENANT} tool versions" in r.json()["error"]["message"]


async def test_an_event_stream_ends_when_its_run_halts(target: RedosTarget) -> None:
    assert not await redos.stream_outlives_halt(target)


async def test_a_revoked_keys_event_stream_closes_within_the_bound(target: RedosTarget) -> None:
    assert not await redos.stream_outlives_revocation(target)


async def test_a_tool_servers_backtracking_output_schema_does_not_hang_the_executor() -> None:
    # The MCP client checks each structured result against the server's declared outputSchema,
    # inside the executor that serves every tenant: the result fails fast instead.
    assert not await redos.hostile_output_schema()
