"""`dev` and `demo`: bring up a whole local deployment from nothing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from agentstream.approvals import record_decision
from agentstream.cli.commands import follow_and_print
from agentstream.client.journal import JournalClient, RunRequest
from agentstream.config import Settings
from agentstream.events import ApprovalRequested
from agentstream.localcluster import LocalCluster, supervise
from agentstream.localkafka import LocalKafka
from agentstream.process import stop_on_signals
from agentstream.security.signing import platform_signers
from agentstream.stack import (
    LAYOUT_ENV,
    ProcessorProcesses,
    ScriptedModel,
    child_env,
    ensure_broker,
    ensure_topics,
    wait_for_tools,
    with_local_bootstrap,
)

T = TypeVar("T")
LocalBroker = LocalKafka | LocalCluster
DEMO_TOOLS = ("calculator", "get_current_time", "lookup", "transfer_funds")
DEMO_TASK = (
    "[scenario:demo] Dinner bills of 42.00, 38.00 and 45.00 dollars are split four ways. Work out my share, "
    "pay it to account ACC-204-778 with a memo, and timestamp the receipt (I am in Tokyo)."
)


async def _stage(n: int, total: int, what: str, action: Callable[[], Awaitable[T]]) -> T:
    """A progress line per start-up stage: long waits (first jar fetch, JVM start) stay visible."""
    print(f"[{n}/{total}] {what} ...", end="", flush=True, file=sys.stderr)
    t0 = time.monotonic()
    result = await action()
    print(f" done ({time.monotonic() - t0:.1f}s)", file=sys.stderr, flush=True)
    return result


async def _up(settings: Settings) -> tuple[Settings, ScriptedModel | None, ProcessorProcesses, LocalBroker | None]:
    total = 4
    kafka = await _stage(1, total, f"Kafka ({settings.bootstrap_servers})", lambda: ensure_broker(settings))
    settings = with_local_bootstrap(settings, kafka)
    await _stage(2, total, "topics from topics.yaml", lambda: ensure_topics(settings))
    model: ScriptedModel | None = None
    url = settings.model.base_url
    if not url:
        model = ScriptedModel()
        url = await _stage(3, total, "scripted model server (offline stand-in for a provider)", model.start)
    procs = ProcessorProcesses(child_env(settings, url), settings.home / "logs")
    procs.start_all()
    await _stage(4, total, "processors (orchestrator, policy-gate, cost-governor, model-invoker, tool-executor)",
                 lambda: wait_for_tools(settings, DEMO_TOOLS))  # fmt: skip
    return settings, model, procs, kafka


async def dev(settings: Settings) -> int:
    # Every processor core in one process unless told otherwise: no hop between them.
    os.environ.setdefault(LAYOUT_ENV, "engine")
    settings, model, procs, kafka = await _up(settings)
    procs.start_gateway()
    print(
        f"agentstream dev: up; run API at http://127.0.0.1:8080 (OpenAPI at /openapi.json); logs in {settings.home / 'logs'}"
    )
    print('try: agentstream run "[scenario:demo] hi" --follow')
    stop = asyncio.Event()
    stop_on_signals(stop)
    # The broker dev uses is supervised like the processors: a dead one is restarted (its clients
    # wait for it), with one line per state change.
    nodes = [] if kafka is None else kafka.nodes if isinstance(kafka, LocalCluster) else [kafka]
    broker_watch = asyncio.create_task(
        supervise(nodes, stop, lambda line: print(f"agentstream dev: {line}", file=sys.stderr, flush=True))
    )
    try:
        while not stop.is_set():
            for key in procs.crashed():
                print(f"agentstream dev: {key} exited; restarting it", file=sys.stderr)
                procs.restart(key)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    finally:
        # Mid-restart, the supervisor may be waiting on a starting broker: leave that one running.
        broker_watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await broker_watch
        await procs.stop_all()
        if model is not None:
            model.stop()
    return 0


async def _follow_watching(client: JournalClient, run_id: str, procs: ProcessorProcesses) -> int:
    """Follows the run, but gives up at once, with the log, if a processor dies: the demo must
    never hang silently on a broken installation."""
    follow = asyncio.create_task(follow_and_print(client, run_id, timeout_s=120))
    while not follow.done():
        crashed = procs.crashed()
        if crashed:
            follow.cancel()
            for key in crashed:
                log = procs.log_dir / f"{key}.log"
                tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                print(f"\nagentstream demo: processor {key} exited unexpectedly:\n{tail}", file=sys.stderr)
            return 1
        await asyncio.sleep(0.5)
    return follow.result()


async def _approve_as_demo_operator(settings: Settings, run_id: str) -> None:
    """Stands in for the person who approves the payment: irreversible tools wait for a recorded
    approval (in `dev`, through POST /v1/approvals/{id})."""
    watcher = JournalClient(settings)
    signer = platform_signers(settings).approval
    try:
        async for entry in watcher.follow(run_id, timeout_s=120):
            if isinstance(entry.event, ApprovalRequested):
                print(f"  approval requested for {entry.event.tool} {entry.event.arguments_json}: "
                      "approved by demo-operator", flush=True)  # fmt: skip
                await record_decision(watcher, signer, entry.event, approved=True, decided_by="demo-operator",
                                      reason="the user asked for this payment")  # fmt: skip
    finally:
        await watcher.aclose()


async def demo(settings: Settings, *, keep_broker: bool = False) -> int:
    os.environ.setdefault(LAYOUT_ENV, "engine")
    settings, model, procs, kafka = await _up(settings)
    client = JournalClient(settings)
    try:
        run_id = await client.request_run(
            RunRequest(task=DEMO_TASK, model="scripted", tools=list(DEMO_TOOLS), max_steps=12)
        )
        print(f"\nrun {run_id}: {DEMO_TASK}\n")
        approver = asyncio.create_task(_approve_as_demo_operator(settings, run_id))
        try:
            code = await _follow_watching(client, run_id, procs)
        finally:
            approver.cancel()
        print(f"\nreconstruct it from the journal: agentstream runs show {run_id}")
        return code
    finally:
        await client.aclose()
        await procs.stop_all()
        if model is not None:
            model.stop()
        if kafka is not None and not keep_broker:
            await kafka.stop()
