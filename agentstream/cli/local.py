"""`dev` and `demo`: bring up a whole local deployment from nothing."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

import httpx

from agentstream.approvals import record_decision
from agentstream.cli.commands import follow_and_print
from agentstream.client.journal import JournalClient, RunRequest
from agentstream.config import Settings
from agentstream.connect.local import local_worker, start_warehouse, supervise_worker
from agentstream.connect.worker import ConnectWorker, ConnectWorkerError
from agentstream.console.devkey import console_banner, console_key
from agentstream.events import ApprovalRequested
from agentstream.jvm import JarFetchError
from agentstream.localcluster import LocalCluster, supervise
from agentstream.localkafka import LocalKafka
from agentstream.monitor.daemon import Monitor
from agentstream.process import stop_on_signals
from agentstream.resources import ResourceError
from agentstream.security.signing import platform_signers
from agentstream.settings import ProcessSettings, WarehouseSettings, load, once
from agentstream.stack import (
    LAYOUT_ENV,
    ProcessorProcesses,
    ScriptedModel,
    child_env,
    ensure_broker,
    ensure_topics,
    local_broker_at,
    wait_for_tools,
    with_local_bootstrap,
)

T = TypeVar("T")
LocalBroker = LocalKafka | LocalCluster
DEMO_TOOLS = ("calculator", "get_current_time", "lookup", "transfer_funds")
DEMO_TASK = (
    "[scenario:demo] Dinner bills of 4200, 3800 and 4500 cents are split four ways. Work out my share, "
    "pay it to account ACC-204-778 with a memo, and timestamp the receipt in UTC (I am in Asia/Tokyo)."
)


async def _stage(n: int, total: int, what: str, action: Callable[[], Awaitable[T]]) -> T:
    """A progress line per start-up stage: long waits (first jar fetch, JVM start) stay visible."""
    print(f"[{n}/{total}] {what} ...", end="", flush=True, file=sys.stderr)
    t0 = time.monotonic()
    result = await action()
    print(f" done ({time.monotonic() - t0:.1f}s)", file=sys.stderr, flush=True)
    return result


async def _up(
    settings: Settings, total: int = 4, kafka_port: int | None = None, scenario_dirs: Sequence[Path] = ()
) -> tuple[Settings, ScriptedModel | None, ProcessorProcesses, LocalBroker | None]:
    where = settings.bootstrap_servers if kafka_port is None else f"127.0.0.1:{kafka_port}"
    kafka = await _stage(1, total, f"Kafka ({where})", lambda: ensure_broker(settings, kafka_port))
    settings = with_local_bootstrap(settings, kafka)
    await _stage(2, total, "topics from topics.yaml", lambda: ensure_topics(settings))
    model: ScriptedModel | None = None
    url = settings.model.base_url
    if not url:
        model = ScriptedModel(list(scenario_dirs))
        url = await _stage(3, total, "scripted model server (offline stand-in for a provider)", model.start)
    # Every processor core in one process unless AGENTSTREAM_LAYOUT says otherwise: no hop between them.
    layout = once(ProcessSettings).layout or "engine"
    procs = ProcessorProcesses(child_env(settings, url, {LAYOUT_ENV: layout}), settings.home / "logs")
    procs.start_all()
    await _stage(4, total, f"processors ({', '.join(procs.cores())})", lambda: wait_for_tools(settings, DEMO_TOOLS))
    return settings, model, procs, kafka


async def dev_command(args: argparse.Namespace) -> int:
    """`agentstream dev` with its options (main.py routes here)."""
    dirs = [Path(d) for d in args.scenarios]
    for d in dirs:
        if not d.is_dir():
            print(f"agentstream dev: --scenarios {d}: not a directory of scenario files", file=sys.stderr)
            return 2
    settings = Settings.from_env()
    if args.kafka_port is not None and not settings.uses_local_broker:
        print("agentstream dev: --kafka-port starts a local broker, but KAFKA_BOOTSTRAP_SERVERS names a broker "
              "to use: give one or the other", file=sys.stderr)  # fmt: skip
        return 2
    return await dev(settings, gateway_port=args.gateway_port, kafka_port=args.kafka_port,
                     scenario_dirs=dirs)  # fmt: skip


def _port_taken(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


async def _gateway_answers(procs: ProcessorProcesses, url: str, timeout_s: float = 300.0) -> None:
    """Until the gateway answers its health check (it serves only once it has read the journal and
    the registry) and every processor is still running; a child that exits ends the wait with its log."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2.0) as http:
        while True:
            if crashed := procs.crashed():
                key = crashed[0]
                log = procs.log_dir / f"{key}.log"
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(f"{key} exited while starting:\n{tail}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"{url}/healthz")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the gateway did not answer at {url} within {timeout_s:.0f}s")
            await asyncio.sleep(0.2)


async def dev(
    settings: Settings,
    *,
    gateway_port: int = 8080,
    kafka_port: int | None = None,
    scenario_dirs: Sequence[Path] = (),
) -> int:
    # Said before anything starts: a second deployment on the same ports would otherwise come up
    # half-way and fail in a log file.
    # (A broker left running by an earlier `dev` on this home and port is reused, not a clash.)
    ours = kafka_port is not None and local_broker_at(settings, kafka_port).running_pid() is not None
    for port, option in ((gateway_port, "--gateway-port"), (None if ours else kafka_port, "--kafka-port")):
        if port is not None and _port_taken(port):
            print(f"agentstream dev: port {port} is in use (another `agentstream dev`?): choose another with "
                  f"{option}, and give the second deployment its own AGENTSTREAM_HOME", file=sys.stderr)  # fmt: skip
            return 2
    warehouse = load(WarehouseSettings)
    total = 6 if warehouse.enabled else 5
    settings, model, procs, kafka = await _up(settings, total, kafka_port, scenario_dirs)
    url = f"http://127.0.0.1:{gateway_port}"
    procs.start_gateway(port=gateway_port)
    worker: ConnectWorker | None = None
    try:
        await _stage(5, total, f"gateway ({url})", lambda: _gateway_answers(procs, url))
        if warehouse.enabled:
            started = await _stage(6, total, "Connect worker and the audit warehouse's sinks",
                                   lambda: start_warehouse(settings, warehouse))  # fmt: skip
            worker = started[0]
            print(f"agentstream dev: warehouse sinks running in {started[2][0].location} "
                  f"(Connect worker at {worker.url}, log {worker.log_file})", file=sys.stderr)  # fmt: skip
    except (RuntimeError, TimeoutError, ConnectWorkerError, JarFetchError, ResourceError) as exc:
        print(f"\nagentstream dev: {exc}", file=sys.stderr)
        if warehouse.enabled:  # a worker that started before a sink failed: by its pid file
            await local_worker(settings, warehouse).stop()
        await procs.stop_all()
        if model is not None:
            model.stop()
        return 1
    print(f"agentstream dev: up; run API at {url} (OpenAPI at /openapi.json); Kafka at {settings.bootstrap_servers}; "
          f"logs in {settings.home / 'logs'}", flush=True)  # fmt: skip
    print(f"agentstream dev: {console_banner(url, await console_key(settings))}", flush=True)
    # The CLI finds a broker on another port only if told where it is.
    prefix = "" if kafka_port is None else f"KAFKA_BOOTSTRAP_SERVERS={settings.bootstrap_servers} "
    print(f'try: {prefix}agentstream run "[scenario:demo] hi" --follow', flush=True)
    stop = asyncio.Event()
    stop_on_signals(stop)
    # The broker dev uses is supervised like the processors: a dead one is restarted (its clients
    # wait for it), with one line per state change.
    nodes = [] if kafka is None else kafka.nodes if isinstance(kafka, LocalCluster) else [kafka]
    say: Callable[[str], None] = lambda line: print(f"agentstream dev: {line}", file=sys.stderr, flush=True)  # noqa: E731
    broker_watch = asyncio.create_task(supervise(nodes, stop, say))
    # The warehouse's worker likewise, when it runs; stopped with the processors.
    worker_watch = asyncio.create_task(supervise_worker(worker, stop, say)) if worker is not None else None
    # The alert monitor (agentstream alerts): in this process, rebuilt from the journal if it fails.
    monitor_watch = asyncio.create_task(watch_alerts(settings, stop, say))
    try:
        while not stop.is_set():
            for key in procs.crashed():
                print(f"agentstream dev: {key} exited; restarting it", file=sys.stderr)
                procs.restart(key)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    finally:
        # Mid-restart, the supervisor may be waiting on a starting broker: leave that one running.
        for watch in (broker_watch, worker_watch, monitor_watch):
            if watch is not None:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
        await procs.stop_all()
        if worker is not None:
            await worker.stop()
        if model is not None:
            model.stop()
    return 0


async def watch_alerts(settings: Settings, stop: asyncio.Event, say: Callable[[str], None]) -> None:
    """Runs the alert monitor until `stop`; one that fails is said and started again (it rebuilds
    its windows from the journal), never taking the deployment down."""
    while not stop.is_set():
        try:
            await Monitor(settings).run(stop)
        except Exception as exc:
            say(f"alert monitor failed ({type(exc).__name__}: {exc}); restarting it")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0)


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
