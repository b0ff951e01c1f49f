"""The CLI commands. Each returns an exit code."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import orjson

from agentstream.cli.api import api_configured, via_api
from agentstream.cli.offloaded import fetch_offloaded
from agentstream.cli.trees import print_relations_from_journal, print_relations_via_api, tree_from_journal, tree_via_api
from agentstream.client.http import RunsClient
from agentstream.client.journal import (
    JournalClient,
    JournalEntry,
    RunBudget,
    RunRequest,
    read_run_once,
    waiting_halt,
)
from agentstream.client.warehouse import warehouse_entries
from agentstream.config import Settings
from agentstream.connect.location import reader_catalog
from agentstream.contract.vocab import RunStatus
from agentstream.events import TERMINAL_TYPES, ApprovalRequested, ResumeRequested, RunEvent, RunHalted, RunRequested
from agentstream.process import wait_for_kafka
from agentstream.settings import ProcessSettings, WarehouseSettings, load, once
from agentstream.stack import ensure_broker, ensure_topics, with_local_bootstrap
from agentstream.topics import load_topics, verify_topics
from agentstream.trajectory import describe, summarize


async def dispatch(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    match args.command:
        case "process":
            return await _process(settings, args.name, args.instance)
        case "dev" | "demo":
            from agentstream.cli.local import demo, dev

            return await (dev(settings) if args.command == "dev" else demo(settings, keep_broker=args.keep_broker))
        case "run":
            return await _run(settings, args)
        case "runs":
            if args.runs_command == "show":
                if args.fetch_blobs:  # the operator path: the blob store is read directly
                    return await show_run(settings, args.run_id, as_json=args.json, fetch_blobs=True)
                if api_configured():
                    return await via_api(lambda c: _show_via_api(c, args.run_id, as_json=args.json))
                return await show_run(settings, args.run_id, as_json=args.json)
            if args.runs_command == "tree":
                if api_configured():
                    return await via_api(lambda c: tree_via_api(c, args.run_id, as_json=args.json))
                return await tree_from_journal(settings, args.run_id, as_json=args.json)
            if args.runs_command == "resume":
                if api_configured():
                    return await via_api(lambda c: _resume_via_api(c, args))
                return await _resume(settings, args)
            if api_configured():
                return await via_api(lambda c: _cancel_via_api(c, args.run_id, args.reason))
            return await _cancel(settings, args.run_id, args.reason)
        case "replay":
            from agentstream.tools.replay import replay_command

            return await replay_command(settings, args.run_id)
        case "topics":
            return await _topics(settings, args.action)
        case "kafka":
            from agentstream.cli.kafka import kafka_command

            return await kafka_command(settings, args.action, args.brokers)
        case "gateway":
            return await _gateway(settings, args.host, args.port)
        case "signing-keys":
            from agentstream.cli.signing import signing_command

            return await signing_command(settings, args)
        case "status":
            from agentstream.cli.status import show_status

            return await show_status(settings)
        case "tenants" | "keys":
            from agentstream.cli.tenants import keys_command, tenants_command

            return await (tenants_command if args.command == "tenants" else keys_command)(settings, args)
    return 2


async def _gateway(settings: Settings, host: str, port: int) -> int:
    from agentstream.gateway.service import serve_gateway
    from agentstream.process import configure_logging, stop_on_signals

    configure_logging()
    settings = settings.as_component("gateway")
    stop = asyncio.Event()
    stop_on_signals(stop)
    await wait_for_kafka(settings, load_topics(settings.topic_prefix)["tenants"].name)
    await serve_gateway(settings, host, port, stop)
    return 0


async def _process(settings: Settings, name: str, instance: str) -> int:
    from agentstream.process import configure_logging, serve_cores, stop_on_signals
    from agentstream.processors.catalog import builds_for, engine_cores

    configure_logging()
    settings = settings.as_component(name)
    stop = asyncio.Event()
    stop_on_signals(stop)
    cores = engine_cores(settings.kv) if name == "engine" else (name,)
    profile_to = once(ProcessSettings).profile_dir
    if not profile_to:
        await serve_cores(builds_for(cores), settings, instance, stop, name=name)
        return 0
    # A CPU profile of the whole process, written when it stops (for benchmarks and tuning).
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        await serve_cores(builds_for(cores), settings, instance, stop, name=name)
    finally:
        profiler.disable()
        profiler.dump_stats(profile_to / f"{name}-{instance}.prof")
    return 0


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    if api_configured():
        return await via_api(lambda c: _run_via_api(c, args))
    client = JournalClient(settings)
    try:
        run_id = await client.request_run(
            RunRequest(
                task=args.task,
                model=args.model,
                tools=args.tool,
                max_steps=args.max_steps,
                tenant_id=args.tenant,
                budget=budget_of(args),
                context=context_of(args),
                workflow=workflow_of(args)[0],
                workflow_version=workflow_of(args)[1],
            )
        )
        print(run_id)
        if not args.follow:
            return 0
        return await follow_and_print(client, run_id)
    finally:
        await client.aclose()


# Exit codes of a followed run (`run --follow`): documented in `agentstream run --help`.
EXIT_COMPLETED, EXIT_ENDED_OTHERWISE, EXIT_HALTED = 0, 1, 3
FOLLOW_EXIT_CODES = (
    "exit codes with --follow: 0 the run completed; 1 it failed or was cancelled (or the request was "
    "refused); 2 bad arguments; 3 it halted at a limit and waits for `agentstream runs resume`"
)
# What raises each limit a run can halt at: the resume flag to print (or another command first).
_RESUME_HINTS = {
    "budget_usd": "--add-usd 1.0",
    "budget_tokens": "--add-tokens 100000",
    "wall_clock": "--add-wall-s 300",
}


async def follow_and_print(client: JournalClient, run_id: str, timeout_s: float | None = None) -> int:
    """Prints the run live until it settles: it ends, or halts and waits for a resume."""
    entries = []
    started = time.monotonic()
    async for entry in client.follow(run_id, timeout_s=timeout_s):
        entries.append(entry)
        print_followed(entry.event, started)
    return _settled(entries)


def print_followed(event: RunEvent, started: float) -> None:
    """One line of a followed run; a call that waits for a person also gets the commands that decide it."""
    line = describe(event)
    if line:
        print(f"  [{time.monotonic() - started:6.2f}s] {line}", flush=True)
    if isinstance(event, ApprovalRequested):
        print(f"  {event.tool} waits for approval: agentstream approvals approve {event.approval_id}"
              f"  (or: agentstream approvals deny {event.approval_id} --reason ...)", file=sys.stderr, flush=True)  # fmt: skip


def _settled(entries: list[JournalEntry]) -> int:
    summary = summarize(entries).to_dict()  # a run that waits at a halt reads as halted
    halt: RunHalted | None = None
    for entry in entries:
        halt = waiting_halt(halt, entry.event)
    _print_summary(summary)
    if halt is not None:
        print(resume_hint(halt), file=sys.stderr)
        return EXIT_HALTED
    return EXIT_COMPLETED if summary["status"] == RunStatus.COMPLETED else EXIT_ENDED_OTHERWISE


def resume_hint(halt: RunHalted) -> str:
    """What to do about a halted run, as commands to copy."""
    run = halt.run_id
    head = f"\nrun {run} halted at step {halt.steps} ({halt.limit}: {halt.reason})"
    cancel = f"  or end it:  agentstream runs cancel {run}"
    if not halt.resumable:
        return f"{head}; it cannot be resumed.\n{cancel}"
    first = ""
    if halt.limit == "kill_switch":
        first = "  release the kill switch first:  agentstream kill <scope> <target> --release\n"
    elif halt.limit.startswith("tenant_"):
        first = "  raise the tenant's cap first:  agentstream budgets <tenant> --usd-per-day N\n"
    more = _RESUME_HINTS.get(halt.limit, "--add-steps 10")
    return f"{head}; it waits for a resume:\n{first}  agentstream runs resume {run} {more}\n{cancel}"


def _print_summary(summary: dict[str, object]) -> None:
    print("\nsummary")
    for key in ("run_id", "status", "reason", "steps", "model_calls", "tool_calls", "tool_errors",
                "model_errors", "input_tokens", "output_tokens", "compactions", "duration_s", "tools_used"):  # fmt: skip
        print(f"  {key:<14} {summary[key]}")


def _event_dicts(entries: list[JournalEntry]) -> list[dict[str, object]]:
    return [{"offset": e.offset, "type": e.event.type_name, **e.event.to_record()} for e in entries]


def _print_trajectory(entries: list[JournalEntry]) -> None:
    for entry in entries:
        line = describe(entry.event)
        if line:
            print(f"  @{entry.offset:<8} {line}")


async def show_run(settings: Settings, run_id: str, *, as_json: bool = False, fetch_blobs: bool = False) -> int:
    entries = await read_run_once(settings, run_id)
    source = "journal"
    if not entries or not isinstance(entries[0].event, RunRequested):
        # Gone from the hot journal (retention, a deleted segment): the audit warehouse keeps it.
        warehouse = load(WarehouseSettings).resolved_warehouse(settings.home)
        archived = await warehouse_entries(warehouse, run_id, None, reader_catalog(settings))
        if archived:
            entries, source = archived, "audit warehouse"
    if not entries:
        print(f"no run {run_id} in the journal or the audit warehouse", file=sys.stderr)
        return 1
    summary = summarize(entries)
    blobs = await fetch_offloaded(settings, entries) if fetch_blobs else None
    if as_json:
        shown = {"summary": summary.to_dict(), "events": _event_dicts(entries), "source": source}
        if blobs is not None:
            shown["blobs"] = blobs.to_dict()
        print(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())
        return 0 if blobs is None or not blobs.errors else 1
    print(f"run {run_id} (tenant {summary.tenant_id}, from the {source}): {summary.task!r}")
    print_relations_from_journal(entries)
    _print_trajectory(entries)
    _print_summary(summary.to_dict())
    return 0 if blobs is None else blobs.print()


async def _cancel(settings: Settings, run_id: str, reason: str) -> int:
    client = JournalClient(settings)
    try:
        entries = await client.read_run(run_id)
        if not entries:
            print(f"no run {run_id} in the journal", file=sys.stderr)
            return 1
        await client.cancel(run_id, entries[0].event.tenant_id, reason)
        print(f"cancel requested for {run_id}")
        return 0
    finally:
        await client.aclose()


def budget_of(args: argparse.Namespace) -> RunBudget:
    return RunBudget(usd=args.budget_usd, tokens=args.budget_tokens, wall_s=args.budget_wall_s, on_loop=args.on_loop)


def workflow_of(args: argparse.Namespace) -> tuple[str, str]:
    """`--workflow NAME[@VERSION]` as (name, version); ("", "") without it: a ReAct run."""
    workflow: tuple[str, str] = args.workflow or ("", "")
    return workflow


def context_of(args: argparse.Namespace) -> dict[str, Any] | None:
    """`--context` (checked as it was parsed), with `--compact` turning the mode on over it."""
    context: dict[str, Any] | None = args.context
    if args.compact:
        context = {**(context or {}), "mode": "on"}
    return context


def raise_of(args: argparse.Namespace) -> RunBudget:
    return RunBudget(usd=args.add_usd, tokens=args.add_tokens, wall_s=args.add_wall_s)


async def _resume(settings: Settings, args: argparse.Namespace) -> int:
    run_id, add_steps, reason = args.run_id, args.add_steps, args.reason
    client = JournalClient(settings)
    try:
        entries = await client.read_run(run_id)
        halts = [e.event for e in entries if isinstance(e.event, RunHalted)]
        resumed = {e.event.halt for e in entries if isinstance(e.event, ResumeRequested)}
        ended = any(e.event.type_name in TERMINAL_TYPES for e in entries)
        if not halts or ended or halts[-1].halt in resumed or not halts[-1].resumable:
            print(f"run {run_id} is not halted at a resumable limit", file=sys.stderr)
            return 1
        await client.resume(run_id, halts[-1].tenant_id, halts[-1].halt, add_steps, reason, raise_budget=raise_of(args))
        print(f"resume requested for {run_id} (+{add_steps} steps)")
        return 0
    finally:
        await client.aclose()


# -- through the run API: used when AGENTSTREAM_API_KEY is set ------------------------------------


async def _api_entries(client: RunsClient, run_id: str, started: float | None = None) -> list[JournalEntry]:
    # JournalEntry is what trajectory.summarize reads: the API path prints the same summary.
    entries: list[JournalEntry] = []
    async for message in client.events(run_id):
        event = message.event
        if not isinstance(event, RunEvent):
            continue
        entries.append(JournalEntry(event, message.id, message.timestamp_ms))
        if started is not None:
            print_followed(event, started)
    return entries


async def _run_via_api(client: RunsClient, args: argparse.Namespace) -> int:
    # The tenant is the API key's: --tenant applies to the Kafka-level path only.
    run = await client.create(
        args.task, model=args.model, tools=args.tool, max_steps=args.max_steps, budget=budget_of(args),
        context=context_of(args), workflow=workflow_of(args)[0] or None, workflow_version=workflow_of(args)[1] or None,
    )  # fmt: skip
    print(run.id)
    if not args.follow:
        return 0
    # The server closes the event stream at a halt, as the journal path stops there.
    return _settled(await _api_entries(client, run.id, started=time.monotonic()))


async def _show_via_api(client: RunsClient, run_id: str, *, as_json: bool) -> int:
    run = await client.get(run_id)
    # The event stream follows a live run until it ends; `show` is a snapshot, so only a finished
    # run's events are read.
    entries = await _api_entries(client, run_id) if run.status.terminal else []
    if as_json:
        shown = {"run": run.model_dump(mode="json"), "events": _event_dicts(entries)}
        print(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(f"run {run.id} ({run.status}, {run.steps} steps): {run.task!r}")
    if run.context is not None and (run.context.mode == "on" or run.context.compactions):
        last = run.context.last_compaction
        since = f", the last ~{last.tokens_before} -> ~{last.tokens_after} tokens" if last is not None else ""
        print(f"  context {run.context.mode}: {run.context.compactions} compaction(s){since}")
    await print_relations_via_api(client, run, entries)
    _print_trajectory(entries)
    if run.reason:
        print(f"  reason: {run.reason}")
    return 0


async def _resume_via_api(client: RunsClient, args: argparse.Namespace) -> int:
    await client.resume(args.run_id, args.add_steps, args.reason, raise_budget=raise_of(args))
    print(f"resume requested for {args.run_id} (+{args.add_steps} steps)")
    return 0


async def _cancel_via_api(client: RunsClient, run_id: str, reason: str) -> int:
    await client.cancel(run_id, reason)
    print(f"cancel requested for {run_id}")
    return 0


async def _topics(settings: Settings, action: str) -> int:
    from agentstream.kafka.acls import AclError, acl_drift
    from agentstream.kafka.auth import CredentialStore, KafkaAuthError, upsert_users

    settings = with_local_bootstrap(settings, await ensure_broker(settings))
    topics = load_topics(settings.topic_prefix)
    specs = list(topics.values())
    try:
        if action == "create":
            if settings.kafka_credentials_dir is not None:
                # Each component's SCRAM user (password generated on first use), then its ACLs.
                principals = CredentialStore(settings.kafka_credentials_dir).ensure_all()
                await upsert_users(settings.bootstrap_servers, settings.kafka_extra, principals)
            created = await ensure_topics(settings)
            print(f"created: {', '.join(created) or 'nothing (all present)'}")
        drift: list[object] = [*await verify_topics(settings.bootstrap_servers, specs, settings.kafka_extra)]
        drift += await acl_drift(settings.bootstrap_servers, topics, settings.kafka_extra)
    except (AclError, KafkaAuthError) as exc:
        print(f"agentstream topics {action}: {exc}", file=sys.stderr)
        return 1
    for d in drift:
        print(f"drift: {d}")
    if not drift:
        print(f"verified {len(specs)} topics and their ACLs: no drift")
    return 1 if drift else 0
