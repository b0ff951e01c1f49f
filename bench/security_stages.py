"""The security bench's targets that are whole deployments (every processor its own process, the
scripted model, the real gateway): forged journal events on bench/attacks/trust.py's stage, and one
shared stage (bench/attacks/approvals.py's) for approvals, secret binding, ReDoS, registration
egress and the denied-call loop. Control runs switch one defense off: the writer checks in a
throwaway deployment (`AGENTSTREAM_JOURNAL_AUTH=0`), and on the shared stage a throwaway tenant
whose policy allows self-approval or halts on repeated denials, a second gateway that re-checks a
stream's key once an hour, and the operator's egress exemption set to every address."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

from agentstream.config import ModelSettings, Settings
from agentstream.gateway.app import GatewayConfig
from agentstream.gateway.service import running_gateway
from agentstream.registry.admin import set_policy
from agentstream.registry.entry import TenantPolicy
from agentstream.stack import ensure_topics
from agentstream.tenancy.admin import create_tenant, issue_key
from bench.attacks import approvals, egress, loops, redos, trust, trust_dispatch
from bench.security_tally import Tally, environment


async def fresh_settings(base: Settings, work: Path, prefix: str) -> tuple[Settings, Path]:
    """Settings on the bench's broker with their own topics and home, and a scenarios folder."""
    root = work / f"{prefix}-{uuid.uuid4().hex[:6]}"
    (root / "home").mkdir(parents=True)
    (root / "scenarios").mkdir()
    settings = replace(base, topic_prefix=f"{prefix}{uuid.uuid4().hex[:8]}", home=root / "home", model=ModelSettings())
    await ensure_topics(settings)
    return settings, root / "scenarios"


# -- forged events ------------------------------------------------------------------------------------


async def forged_events_kind(tally: Tally, base: Settings, work: Path, *, control: bool) -> None:
    settings, scenarios = await fresh_settings(base, work, "sectr")
    async with trust.trust_stage(settings, scenarios, checks=not control) as stage:
        for name, attack in trust.ATTACKS.items():
            await tally.attempt("forged_events", name, lambda a=attack: a(stage), control=control)  # type: ignore[misc]
    if control:
        return  # the replica-pool check has no off switch
    settings, scenarios = await fresh_settings(base, work, "secrg")
    rogue = await trust_dispatch.start_rogue()
    try:
        async with trust_dispatch.invoker_stage(settings, scenarios) as (dispatch, _pool_url):
            await tally.attempt("forged_events", "dispatch_to_rogue_replica",
                                lambda: trust_dispatch.dispatch_to_rogue(dispatch, rogue))  # fmt: skip
    finally:
        rogue.server.close()


# -- the shared stage ---------------------------------------------------------------------------------

CONTROL_TENANT = "acme-ctl"  # allows self-approval: the control of the self-approval rule
LOOP_TENANTS = {"defended": "loops-flag", "control": "loops-halt"}  # "halt" is every run before the fix


async def _prepare(settings: Settings, scenarios: Path) -> dict[str, str]:
    """Everything the deployment must see at its start (scenarios, the inbox tool, policies);
    returns the keys of the ReDoS tenants and of the control tenant."""
    for name, body in redos.SCENARIOS.items():
        (scenarios / f"{name}.json").write_text(json.dumps({"name": name, **body}))
    await loops.prepare_denied_loop(settings, scenarios)
    for tenant, policy in (("loops-flag", TenantPolicy(approval_timeout_s=120, on_repeated_denial="flag")),
                           ("loops-halt", TenantPolicy(approval_timeout_s=120, on_repeated_denial="halt"))):  # fmt: skip
        await set_policy(settings, tenant, policy, by="bench")
    await set_policy(settings, CONTROL_TENANT, TenantPolicy(approval_timeout_s=600, allow_self_approval=True),
                     by="bench")  # fmt: skip
    keys: dict[str, str] = {}
    for tenant in ("evil", "good", "flood", CONTROL_TENANT):
        await create_tenant(settings, tenant, tenant.title(), rate_per_s=500, burst=1000, max_active_runs=50)
    keys["evil"] = await issue_key(settings, "evil", "attacker")
    keys["good"] = await issue_key(settings, "good", "bystander")
    keys["decider"] = await issue_key(settings, CONTROL_TENANT, "alice", approvals.DECIDER)
    keys["approver"] = await issue_key(settings, CONTROL_TENANT, "bob", approvals.APPROVER)
    return keys


def _cli_env(settings: Settings) -> contextlib.AbstractContextManager[None]:
    return environment(KAFKA_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
                       AGENTSTREAM_TOPIC_PREFIX=settings.topic_prefix, AGENTSTREAM_HOME=str(settings.home))  # fmt: skip


async def _registration(tally: Tally, t: approvals.ApprovalsTarget, *, control: bool) -> None:
    """Allowlist entries and remote URLs naming internal addresses, through the API and the CLI.
    Control: the operator's exemption set to every address (off-machine entries are not offered)."""
    port = int(t.settings.bootstrap_servers.split(",")[0].rsplit(":", 1)[1])  # the broker's
    entries = ["127.0.0.1", f"127.0.0.1:{port}", "127.1", "2130706433", "0.0.0.0"]
    entries += [] if control else ["localhost", "169.254.169.254", "10.0.0.1", "100.64.0.1", "192.168.1.1"]
    if (name := egress.loopback_name()) is not None:
        entries.append(name)
    cli = ["127.0.0.1", "[::1]"]
    async with t.client(t.keys["runner"]) as c:
        for entry in entries:
            await tally.attempt("egress", f"register_via_api {entry}",
                                lambda e=entry: egress.register_via_api(c, egress=e), control=control)  # type: ignore[misc]  # fmt: skip
        await tally.attempt("egress", "register_remote_url http://127.0.0.1/mcp",
                            lambda: egress.register_via_api(c, egress=f"127.0.0.1:{port}",
                                                            url=f"http://127.0.0.1:{port}/mcp"), control=control)  # fmt: skip
    with _cli_env(t.settings):
        for entry in cli:
            await tally.attempt("egress", f"register_via_cli {entry}",
                                lambda e=entry: egress.register_via_cli(approvals.APPROVALS_TENANT, egress=e),  # type: ignore[misc]
                                control=control)  # fmt: skip


async def _redos(tally: Tally, t: approvals.ApprovalsTarget, keys: dict[str, str]) -> None:
    rt = redos.RedosTarget(t.settings, t.deployment, t.url, keys["evil"], keys["good"])
    attacks: list[tuple[str, Callable[[], Awaitable[bool]]]] = [
        ("backtracking_pattern", lambda: redos.backtracking_pattern(rt)),
        ("schema_backreference", lambda: redos.refused_schema(rt, redos.schema("^(a)\\1$"))),
        ("schema_lookahead", lambda: redos.refused_schema(rt, redos.schema(redos.BACKTRACKING_ONLY))),
        ("schema_too_large", lambda: redos.refused_schema(rt, redos.too_large())),
        ("schema_too_deep", lambda: redos.refused_schema(rt, redos.too_deep())),
        ("schema_remote_ref", lambda: redos.refused_schema(
            rt, {"type": "object", "properties": {"s": {"$ref": "http://169.254.169.254/latest/meta-data"}}})),
        ("version_flood", lambda: redos.version_flood(rt)),
        ("smuggled_version_flood", lambda: redos.smuggled_version_flood(rt)),
        ("smuggled_schema", lambda: redos.smuggled_schema(rt, redos.BACKTRACKING_ONLY, restart=False)),
        ("stream_outlives_halt", lambda: redos.stream_outlives_halt(rt)),
        ("stream_outlives_revocation", lambda: redos.stream_outlives_revocation(rt)),
    ]  # fmt: skip
    for name, attack in attacks:
        await tally.attempt("redos", name, attack)
    # Control: a gateway that re-checks a stream's key once an hour (the bound switched off).
    async with running_gateway(t.settings, port=0, config=GatewayConfig(auth_recheck_s=3600)) as lax:
        await tally.attempt("redos", "stream_outlives_revocation",
                            lambda: redos.stream_outlives_revocation(replace(rt, url=lax, bound_s=25.0)),
                            control=True)  # fmt: skip


async def platform_kinds(tally: Tally, base: Settings, work: Path, kinds: frozenset[str]) -> None:
    settings, scenarios = await fresh_settings(base, work, "secpl")
    keys = await _prepare(settings, scenarios)
    probe = work / "secret-probe"
    with environment(**{"AGENTSTREAM_EGRESS_ALLOW_PRIVATE": None}):
        async with approvals.approvals_target(settings, scenarios, probe) as t:
            if "denied_call_loop" in kinds:
                for mode, tenant in LOOP_TENANTS.items():
                    await tally.attempt("denied_call_loop", "injection_repeats_denied_call",
                                        lambda tn=tenant: _loop(t, tn), control=mode == "control")  # type: ignore[misc]  # fmt: skip
            if "approvals" in kinds:
                for name in ("self_approval", "self_approval_in_anothers_name", "approve_without_scope",
                             "read_key_writes"):  # fmt: skip
                    await tally.attempt("approvals", name, lambda n=name: approvals.ATTACKS[n](t))  # type: ignore[misc]
                lax = replace(t, keys={**t.keys, "decider": keys["decider"], "approver": keys["approver"]})
                for name in ("self_approval", "self_approval_in_anothers_name"):
                    await tally.attempt("approvals", name, lambda n=name: approvals.ATTACKS[n](lax), control=True)  # type: ignore[misc]
            if "secret_binding" in kinds:  # nothing switches grants off: no control
                for name in ("same_name_tool_gets_secret", "pin_override", "encoded_echo"):
                    await tally.attempt("secret_binding", name, lambda n=name: approvals.ATTACKS[n](t))  # type: ignore[misc]
            if "egress" in kinds:
                await _registration(tally, t, control=False)
                with environment(AGENTSTREAM_EGRESS_ALLOW_PRIVATE="0.0.0.0/0,::/0"):
                    await _registration(tally, t, control=True)
            if "redos" in kinds:
                await _redos(tally, t, keys)


async def _loop(t: approvals.ApprovalsTarget, tenant: str) -> bool:
    outcome = await loops.run_denied_loop(t.deployment, tenant)
    # Judged as the defended policy ("flag") judges it: did the user's own task finish, paid once?
    return outcome.succeeded("flag")
