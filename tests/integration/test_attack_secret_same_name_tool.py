"""Issue 13, finding 7: a secret is bound to a tool's identity, not its name. Against the real broker,
processors and gateway, with a tenant secret granted to the platform tool `crm_lookup`:

* the tenant registers its own `crm_lookup` and runs it: the executor refuses it the secret
  (`SecretNotGranted`, an error observation), the tool never runs, and no form of the secret
  (plain, base64, hex, reversed, halves) is anywhere in the journal;
* a run started before that registration keeps the platform tool it pinned: the call reaches the
  platform's tool, never the tenant's;
* the platform tool's own encoded echo of its secret is scrubbed (base64, hex, reversed).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest

from agentstream.events import RunStarted, ToolCallCompleted
from agentstream.registry.admin import read_catalog
from bench.attacks import approvals as attacks
from bench.attacks.approvals import SECRET_TENANTS, TOOL, ApprovalsTarget, start_run
from tests.harness import isolated_settings

PIN_TENANT, SHADOW_TENANT, ECHO_TENANT = SECRET_TENANTS


@pytest.fixture(scope="module")
async def target(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ApprovalsTarget]:
    home = tmp_path_factory.mktemp("samename")
    settings, scenario_dir = await isolated_settings(kafka_bootstrap, home, "sn")
    async with attacks.approvals_target(settings, scenario_dir, home / "probe") as t:
        yield t


def observation(events: Sequence[object]) -> ToolCallCompleted:
    (found,) = [e for e in events if isinstance(e, ToolCallCompleted)]
    return found


async def test_a_run_started_before_a_same_named_registration_keeps_the_platform_tool(
    target: ApprovalsTarget,
) -> None:
    assert not await attacks.pin_override(target, PIN_TENANT)
    from agentstream.registry.pins import pin_of, resolve_pin  # here: the attack also runs on a platform without it

    async with target.client(target.secret_keys[PIN_TENANT]) as c:
        runs = (await c.get("/v1/runs")).json()["data"]
    (run,) = runs
    events = await target.journal(run["id"])
    started = next(e for e in events if isinstance(e, RunStarted))
    assert started.tool_pins[TOOL].startswith("_platform/")
    result = observation(events)
    assert not result.is_error and "label=platform" in result.content, result.content
    assert "[REDACTED]" in result.content  # the platform tool got its secret and echoed it, scrubbed
    assert not (target.probe_dir / f"tenant-{PIN_TENANT}.json").exists()
    # The registry now resolves the name to the tenant's tool for new runs, never for this one.
    catalog = await read_catalog(target.settings)
    mine = catalog.latest(PIN_TENANT, TOOL)
    assert mine is not None and catalog.visible(PIN_TENANT)[TOOL] == mine
    pinned = resolve_pin(catalog, PIN_TENANT, TOOL, started.tool_pins[TOOL])
    assert pinned is not None and pinned.owner == "" and pin_of(pinned) == started.tool_pins[TOOL]


async def test_a_same_named_tenant_tool_never_receives_the_platform_tools_secret(target: ApprovalsTarget) -> None:
    assert not await attacks.same_name_tool_gets_secret(target, SHADOW_TENANT)
    async with target.client(target.secret_keys[SHADOW_TENANT]) as c:
        (run,) = (await c.get("/v1/runs")).json()["data"]
    events = await target.journal(run["id"])
    started = next(e for e in events if isinstance(e, RunStarted))
    assert started.tool_pins[TOOL].startswith(f"{SHADOW_TENANT}/")  # its own tool, for its new run
    result = observation(events)
    assert result.is_error and "SecretNotGranted" in result.content, result.content
    assert "label=" not in result.content  # the tool did not run at all
    assert not (target.probe_dir / f"tenant-{SHADOW_TENANT}.json").exists()
    journaled = " ".join(repr(e.to_record()) for e in events)
    assert not any(form in journaled for form in attacks.secret_forms(target.secrets[SHADOW_TENANT]))
    # A second run, and a run naming no tools (every visible tool), fare the same.
    async with target.client(target.secret_keys[SHADOW_TENANT]) as c:
        again = await start_run(c, "crm")
    await attacks._approve_crm_call(target, SHADOW_TENANT, again)
    second = observation(await target.journal(again))
    assert second.is_error and "SecretNotGranted" in second.content


async def test_encoded_echoes_of_a_secret_are_scrubbed(target: ApprovalsTarget) -> None:
    assert not await attacks.encoded_echo(target, ECHO_TENANT)
