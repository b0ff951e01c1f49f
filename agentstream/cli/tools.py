"""`agentstream tools ...`: the tool registry (register, discover, list, show, disable, enable)
and tenant tool policies. A user error is one line on stderr and exit code 1."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from agentstream.cli.args import context_settings, eval_policy
from agentstream.config import Settings
from agentstream.registry import admin
from agentstream.registry.admin import RegistryError
from agentstream.registry.entry import TIERS, TenantPolicy, ToolEntry
from agentstream.registry.pins import identity_of


def add_tools_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tools = sub.add_parser("tools", help="the tool registry and tenant tool policies")
    tools.set_defaults(handler=_run)
    tsub = tools.add_subparsers(dest="tools_command", required=True)
    reg = tsub.add_parser("register", help="register a tool version (a changed contract is a new version)")
    reg.add_argument("name")
    where = reg.add_mutually_exclusive_group(required=True)
    where.add_argument("--command", help="an MCP stdio server's command line (shell-quoted), run sandboxed")
    where.add_argument("--url", help="a remote MCP server's streamable-HTTP URL (its host must be in --egress)")
    reg.add_argument("--schema", default='{"type": "object"}', help="JSON Schema of the arguments")
    reg.add_argument("--description", default="")
    reg.add_argument("--tier", choices=TIERS, required=True)
    reg.add_argument("--scope", action="append", default=[], help="a scope the tool needs (repeatable)")
    reg.add_argument("--egress", action="append", default=[], help="host[:port] it may reach (repeatable)")
    reg.add_argument("--secret", action="append", default=[], help="a tenant secret it receives (repeatable)")
    reg.add_argument("--timeout-s", type=float, default=30.0)
    reg.add_argument("--approval-timeout-s", type=float, default=None,
                     help="seconds a person has to decide on a call needing approval (capped by the tenant's "
                          "policy; default: the tenant's policy alone)")  # fmt: skip
    reg.add_argument("--owner", default="", help="owning tenant (default: platform-wide)")
    disc = tsub.add_parser(
        "discover",
        help="ask an MCP stdio server for its tools (one JSON object a line); optionally register them",
        epilog="A tiers file maps each tool to its tier, or to {tier, scopes, egress, secrets, timeout_s, "
        "approval_timeout_s}, in YAML or JSON, e.g. `git_status: read_only` and "
        "`git_commit: {tier: irreversible, scopes: [repo:write]}`. Every tool the server lists needs an "
        "entry unless --register-as gives the rest a tier; a name the server does not list is refused.",
    )
    disc.add_argument("--command", required=True, help="the server's command line (shell-quoted)")
    disc.add_argument("--register-as", choices=TIERS, help="register every tool found (but those --tiers names) at it")
    disc.add_argument("--tiers", metavar="FILE", help="register the tools found with per-tool tiers and scopes")
    disc.add_argument("--owner", default="")
    lst = tsub.add_parser("list", help="tools a tenant sees (latest versions)")
    lst.add_argument("--tenant", default="default")
    show = tsub.add_parser("show", help="every version of one tool")
    show.add_argument("name")
    show.add_argument("--owner", default="")
    for verb in ("disable", "enable"):
        p = tsub.add_parser(verb, help=f"kill switch: {verb} a tool in every run within seconds")
        p.add_argument("name")
        p.add_argument("--owner", default="")
        p.add_argument("--reason", default=f"{verb}d from the CLI")
    pol = tsub.add_parser("policy", help="set a tenant's tool policy (replaces the previous one)")
    pol.add_argument("tenant")
    pol.add_argument("--allow", action="append", default=[], help="only these tools (repeatable)")
    pol.add_argument("--deny", action="append", default=[])
    pol.add_argument("--grant-scope", action="append", default=None, help="scopes granted (default: all)")
    pol.add_argument("--auto-approve", action="append", default=[], help="irreversible tools needing no person")
    pol.add_argument("--require-approval", action="append", default=[])
    pol.add_argument("--max-calls", action="append", default=[], metavar="TOOL=N", help="per-run call limit")
    pol.add_argument("--approval-timeout-s", type=float, default=300.0)
    pol.add_argument("--private-tool", action="append", default=[],
                     help="a tool whose results are private data (repeatable; '*': every tool)")  # fmt: skip
    pol.add_argument("--egress-tool", action="append", default=[],
                     help="a tool that sends data out beyond its egress allowlist, e.g. email (repeatable)")  # fmt: skip
    pol.add_argument("--taint-action", choices=["needs_approval", "deny"], default="needs_approval",
                     help="what an egress call carrying private data gets")  # fmt: skip
    pol.add_argument("--allow-self-approval", action="store_true",
                     help="let the API key that created a run decide its approvals (default: refused)")  # fmt: skip
    pol.add_argument("--on-repeated-denial", choices=["warn", "flag", "halt"], default="flag",
                     help="what a run does when its model keeps asking for a denied call (default: flag)")  # fmt: skip
    pol.add_argument("--context", type=context_settings, default=None, metavar="JSON",
                     help="the tenant's default context settings, under each run's own `context`, e.g. "
                     '\'{"mode": "on", "trigger_tokens": 32000}\' (default: the platform\'s, mode off)')  # fmt: skip
    pol.add_argument("--eval", type=eval_policy, default=None, metavar="JSON",
                     help="the step checks' policy, e.g. '{\"requires\": {\"pay\": [\"lookup_*\"]}, \"polling\": "
                     "[\"job_status\"], \"constants\": [\"USD\"]}' (fields: requires, polling, constants, disabled)")  # fmt: skip


async def _run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    try:
        return await _dispatch(settings, args)
    except (RegistryError, ValueError) as exc:
        print(f"agentstream: {exc}", file=sys.stderr)
        return 1


def _transport(command_line: str) -> dict[str, Any]:
    argv = shlex.split(command_line)
    if not argv:
        raise RegistryError("--command is empty")
    return {"kind": "stdio", "server": argv[0].rsplit("/", 1)[-1], "command": argv[0], "args": argv[1:]}


def _approval(entry: ToolEntry) -> str:
    return "" if entry.approval_timeout_s is None else f", approval timeout {entry.approval_timeout_s:g} s"


async def _dispatch(settings: Settings, args: argparse.Namespace) -> int:
    match args.tools_command:
        case "register":
            entry = ToolEntry(
                name=args.name, description=args.description, input_schema=json.loads(args.schema), tier=args.tier,
                transport=_transport(args.command) if args.command else {"kind": "http", "url": args.url},
                owner=args.owner, scopes=tuple(args.scope),
                egress=tuple(args.egress), secrets=tuple(args.secret), timeout_ms=int(args.timeout_s * 1000),
                approval_timeout_s=args.approval_timeout_s,
            )  # fmt: skip
            registered = await admin.register_tool(settings, entry)
            print(f"{registered.name} v{registered.version} ({registered.tier}{_approval(registered)})")
        case "discover":
            from agentstream.processors.tool_executor.discovery import discover

            # The file is read before the server starts: a mistake in it costs nothing.
            tiers = read_tiers(args.tiers) if args.tiers else None
            drafts = await discover(_transport(args.command))
            if tiers is None and not args.register_as:
                for draft in drafts:  # JSON lines: one object a line, for jq or a script
                    print(json.dumps(draft.describe()))
                return 0
            ready = apply_tiers(drafts, tiers or {}, args.register_as, args.owner)
            for done in await admin.register_tools(settings, ready):  # one catalog read, one producer
                print(f"registered {done.name} v{done.version} ({done.tier})")
        case "list":
            catalog = await admin.read_catalog(settings)
            for name, entry in sorted(catalog.visible(args.tenant).items()):
                off = " DISABLED" if catalog.switched_off(entry) else ""
                timeout = catalog.policy(args.tenant).approval_timeout_for(entry)
                print(f"{name:<28} v{entry.version:<4} {entry.tier:<13} approval {timeout:>6g}s  "
                      f"{entry.owner or 'platform'}{off}")  # fmt: skip
        case "show":
            catalog = await admin.read_catalog(settings)
            versions = catalog.versions.get((args.owner, args.name), {})
            if not versions:
                raise RegistryError(f"no tool {args.name!r}")
            # `identity`: what a secret is granted to (`agentstream secrets put --tools`).
            print(json.dumps([{**v.describe(), "identity": identity_of(v).text} for v in versions.values()], indent=2))
        case "disable" | "enable":
            await admin.switch_tool(settings, args.owner, args.name, disabled=args.tools_command == "disable",
                                    reason=args.reason, by="cli")  # fmt: skip
            print(f"{args.name}: {args.tools_command}d")
        case "policy":
            limits = {k: int(v) for k, _, v in (item.partition("=") for item in args.max_calls)}
            policy = TenantPolicy(
                allow=tuple(args.allow), deny=tuple(args.deny),
                granted_scopes=None if args.grant_scope is None else tuple(args.grant_scope),
                auto_approve=tuple(args.auto_approve), require_approval=tuple(args.require_approval),
                max_calls_per_run=limits, approval_timeout_s=args.approval_timeout_s,
                private_tools=tuple(args.private_tool), egress_tools=tuple(args.egress_tool),
                taint_action=args.taint_action, allow_self_approval=args.allow_self_approval,
                on_repeated_denial=args.on_repeated_denial,
                context_json="" if not args.context else json.dumps(args.context),
                eval_json="" if not args.eval else json.dumps(args.eval),
            )  # fmt: skip
            await admin.set_policy(settings, args.tenant, policy, by="cli")
            print(f"policy for {args.tenant}: {policy.to_json()}")
    return 0


# What a tiers file may set for one tool, and the registration field each becomes.
_TIER_FIELDS = {"tier", "scopes", "egress", "secrets", "timeout_s", "approval_timeout_s"}


def read_tiers(path: str) -> dict[str, dict[str, Any]]:
    """A tiers file: tool name -> tier, or -> a mapping of `_TIER_FIELDS` (YAML, or JSON)."""
    try:
        loaded = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RegistryError(f"--tiers {path}: {exc}") from exc
    if not isinstance(loaded, dict) or not loaded:
        raise RegistryError(f"--tiers {path}: expected a mapping of tool name to tier, e.g. `git_status: read_only`")
    tiers: dict[str, dict[str, Any]] = {}
    for name, spec in loaded.items():
        spec = {"tier": spec} if isinstance(spec, str) else spec
        if not isinstance(spec, dict) or "tier" not in spec:
            raise RegistryError(f"--tiers {path}: {name}: give a tier ({', '.join(TIERS)}) or a mapping with one")
        unknown = set(spec) - _TIER_FIELDS
        if unknown:
            raise RegistryError(f"--tiers {path}: {name}: unknown field(s) {', '.join(sorted(unknown))} "
                                f"(known: {', '.join(sorted(_TIER_FIELDS))})")  # fmt: skip
        if spec["tier"] not in TIERS:
            raise RegistryError(f"--tiers {path}: {name}: tier must be one of {', '.join(TIERS)}, not {spec['tier']!r}")
        for many in ("scopes", "egress", "secrets"):
            if not isinstance(spec.get(many, []), list):
                raise RegistryError(f"--tiers {path}: {name}: {many} must be a list")
        tiers[str(name)] = spec
    return tiers


def apply_tiers(
    drafts: list[ToolEntry], tiers: dict[str, dict[str, Any]], default_tier: str | None, owner: str
) -> list[ToolEntry]:
    """The drafts with their tiers and scopes, all checked before anything is registered."""
    found = {d.name for d in drafts}
    stray = sorted(set(tiers) - found)
    if stray:
        raise RegistryError(f"the tiers file names tools the server does not list: {', '.join(stray)} "
                            f"(it lists: {', '.join(sorted(found))})")  # fmt: skip
    missing = sorted(found - set(tiers))
    if missing and default_tier is None:
        raise RegistryError(f"no tier for {', '.join(missing)}: add them to the tiers file, "
                            "or give --register-as for the tools it does not name")  # fmt: skip
    ready = []
    for draft in drafts:
        spec = tiers.get(draft.name, {"tier": default_tier})
        entry = dataclasses.replace(
            draft, tier=spec["tier"], owner=owner, scopes=tuple(spec.get("scopes", ())),
            egress=tuple(spec.get("egress", ())), secrets=tuple(spec.get("secrets", ())),
            timeout_ms=int(float(spec.get("timeout_s", draft.timeout_ms / 1000)) * 1000),
            approval_timeout_s=spec.get("approval_timeout_s"),
        )  # fmt: skip
        admin.validate_entry(entry)
        ready.append(entry)
    return ready
