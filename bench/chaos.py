"""Crash survival: concurrent multi-step runs while processors (and brokers) are SIGKILLed and restarted.

    .venv/bin/python bench/chaos.py --runs 100 --kills 20
    .venv/bin/python bench/chaos.py --runs 100 --kills 20 --brokers 3 --broker-kills 5 --instances 2 --add-remove 1
    .venv/bin/python bench/chaos.py --runs 100 --kills 20 --brokers 3 --broker-kills 5 --instances 2 --add-remove 1 --layout engine
    .venv/bin/python bench/chaos.py --runs 100 --kills 20 --brokers 1 --broker-kills 3 --broker-down-s 5,120,5
    .venv/bin/python bench/chaos.py --runs 100 --kills 20 --steps 12 --context '{"mode": "on", "trigger_tokens": 1000, "keep_turns": 1}'
    .venv/bin/python bench/chaos.py --runs 100 --kills 20 --topologies subagents,graph,code

Each processor is its own OS process. A killer SIGKILLs a random processor at random moments and
restarts it; on top of that the tool executor and model invoker kill themselves, with a small
probability, right after a side effect or a model reply and before its result is journaled (the
narrowest crash window). With --layout engine every processor core runs in one `engine` process
instead, and the killer, the extra instances and the added one are whole engines. The last line
printed is one JSON object. With --topologies a share of the runs are subagent trees, graph runs
and code-mode programs, each run of a tree counted and compared on its own, with more kills aimed
at their phases (bench/chaos_topologies.py, bench/chaos_phases.py; the JSON's `topologies`).

  lost                    runs with no terminal event when the deadline passed
  duplicate_side_effects  transfers applied more than once for one logical call, or applied for a
                          call the journal never requested
  model_calls_resent      requests the model server received for a call whose completion was
                          already in the journal at that moment
  trajectories_differing  runs whose trajectory differs from a crash-free run of the same scenario
  broker_kills            brokers SIGKILLed (the one leading the most journal partitions; with one
                          broker, the broker), each restarted after its --broker-down-s outage
  rebalances              consumer-group membership changes the bench made: an instance added or removed
  processor_exits         processors that exited when the bench had not killed them nor injected a crash
                          (each is restarted, as `agentstream dev` would)

With --context (every run's context settings, the reference runs' too) the runs compact their
prompts: the scripted model answers each summarization call with a deterministic summary, and the
model invoker also kills itself right after a summarization reply (--summary-crash-rate).

  compactions             ContextCompacted events of the chaos runs (min_summaries_per_run: the
                          fewest summarizing ones any run had)
  summarization_calls     summarization model calls (purpose compaction) the chaos runs journaled
  summary_crashes         self-kills right after a summarization reply, before its journal append
                          (crashes_by_point: every injected crash, by point, from the processes' logs)
  summarization_calls_redone  summarization calls the model server answered more than once (made
                          again after such a crash; a resend after the answer was journaled counts
                          in model_calls_resent)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from agentstream.chaos import CRASH_LINE
from agentstream.client.journal import RunRequest
from agentstream.client.scan import read_journal
from agentstream.events import ContextCompacted, LlmCallCompleted, LlmCallRequested, ToolCallRequested
from agentstream.localcluster import LocalCluster, leader_of_most
from agentstream.localkafka import LocalKafka
from agentstream.processors.tool_executor.builtin import bank_stats, bank_transfers
from agentstream.stack import AUTO_APPROVE_DEMO, LAYOUT_ENV, PROCESSORS, Deployment, ProcessorProcesses
from agentstream.topics import JOURNAL, load_topics
from agentstream.trajectory import summarize
from bench import chaos_topologies as topo
from bench.common import bench_settings, cluster_bench_settings, comparable_trajectory
from bench.scenarios import chaos_scenario, write_scenarios
from bench.watch import TerminalWatcher

TOOLS = ["calculator", "lookup", "transfer_funds", "convert_time"]


async def submit(
    deployment: Deployment,
    scenarios: int,
    runs: int,
    steps: int,
    tag: str,
    context: dict[str, Any] | None,
    mix: topo.Mix,
) -> dict[str, topo.Key]:
    run_scenario: dict[str, topo.Key] = {}
    for i in range(runs):
        k = i % scenarios
        # One task length for every run of a scenario: with context management on, the prompt's
        # size decides when it compacts, and a reference must compact where its chaos runs do.
        task = f"[scenario:chaos{k}] {tag:>9} run {i:05d}"
        key, request = mix.request(i, k, RunRequest(task=task, tools=TOOLS, max_steps=steps + 5, context=context), tag)
        run_scenario[await deployment.client.request_run(request)] = key
    return run_scenario


def last_error(logfile: Path) -> str:
    """The exception an exited processor's log ends with (its traceback's last line)."""
    lines = logfile.read_text(errors="replace").splitlines() if logfile.exists() else []
    found = [line for line in lines if "Error" in line.split(":", 1)[0] or "Exception" in line.split(":", 1)[0]]
    return found[-1][:300] if found else "no exception in its log"


def injected_crashes(log_dir: Path) -> dict[str, int]:
    """How many times each crash point killed its process: the line `agentstream.chaos` writes to
    the process's log just before the kill."""
    counts: dict[str, int] = {}
    for logfile in sorted(log_dir.glob("*.log")):
        for line in logfile.read_text(errors="replace").splitlines():
            if line.startswith(CRASH_LINE):
                point = line[len(CRASH_LINE) :].strip()
                counts[point] = counts.get(point, 0) + 1
    return counts


def restart_exited(procs: ProcessorProcesses, log: list[str], exits: list[str]) -> None:
    for key in procs.crashed():
        code = procs.procs[key].returncode
        if code == -signal.SIGKILL:  # the injected crash points kill their own process
            log.append(f"{time.monotonic():.2f} {key} crashed itself; restarting")
        else:
            exits.append(f"{key} (exit code {code}): {last_error(procs.log_dir / f'{key}.log')}")
            log.append(f"{time.monotonic():.2f} {key} EXITED with code {code}; restarting")
        procs.restart(key)


async def killer(deployment: Deployment, kills: int, rng: random.Random, stop: asyncio.Event, log: list[str],
                 exits: list[str]) -> None:  # fmt: skip
    assert deployment.procs is not None
    procs = deployment.procs
    done = 0
    while not stop.is_set():
        restart_exited(procs, log, exits)
        if done < kills:
            await asyncio.sleep(rng.uniform(0.4, 2.0))
            if stop.is_set():
                break
            key = rng.choice(sorted(procs.procs))
            procs.kill(key, signal.SIGKILL)
            done += 1
            log.append(f"{time.monotonic():.2f} SIGKILL {key} ({done}/{kills})")
            await asyncio.sleep(rng.uniform(0.1, 1.0))
            if key in procs.procs:  # not an added instance removed meanwhile
                procs.restart(key)
        else:
            await asyncio.sleep(0.2)


class Brokers:
    """The bench's broker(s), killed and restarted by index: a cluster's nodes, or the single broker."""

    def __init__(self, kafka: LocalKafka | LocalCluster | None) -> None:
        self.kafka = kafka
        self.nodes = [] if kafka is None else kafka.nodes if isinstance(kafka, LocalCluster) else [kafka]

    async def victim(self, topic: str) -> int:
        if not isinstance(self.kafka, LocalCluster):
            return 0
        return await leader_of_most(self.kafka.bootstrap, self.kafka.admin_config(), topic)

    async def restart(self, index: int) -> None:
        if isinstance(self.kafka, LocalCluster):
            await self.kafka.start_node(index)
            # The next kill must not find a partition whose only in-sync copies it would take down.
            await self.kafka.wait_in_sync()
        else:
            await self.nodes[index].start(timeout_s=120)


async def broker_killer(brokers: Brokers, topic: str, kills: int, downs: list[float], rng: random.Random,
                        pending: Callable[[], int], log: list[str], in_flight: list[int]) -> None:  # fmt: skip
    """`kills` times: SIGKILL the broker leading the most journal partitions, restart it after the
    next outage length from `downs`. Stops early only once no run is left to disturb."""
    for done in range(kills):
        await asyncio.sleep(rng.uniform(1.0, 3.0))
        if not pending():
            log.append(f"{time.monotonic():.2f} no run in flight: broker kills stop at {done}/{kills}")
            return
        index = await brokers.victim(topic)
        in_flight.append(pending())
        await brokers.nodes[index].kill()
        down = downs[done % len(downs)]
        log.append(f"{time.monotonic():.2f} SIGKILL broker {index + 1} ({done + 1}/{kills}, {pending()} runs "
                   f"in flight); down for {down:.0f}s")  # fmt: skip
        await asyncio.sleep(down)
        t0 = time.monotonic()
        await brokers.restart(index)
        log.append(f"{time.monotonic():.2f} broker {index + 1} back in {time.monotonic() - t0:.1f}s")


async def churn(procs: ProcessorProcesses, names: tuple[str, ...], cycles: int, rng: random.Random,
                stop: asyncio.Event, log: list[str]) -> int:  # fmt: skip
    """`cycles` times: start one more instance of a random processor, let it join its group and
    take partitions, then stop it gracefully (its partitions move back). Returns the changes made."""
    changes = 0
    for cycle in range(cycles):
        await asyncio.sleep(rng.uniform(2.0, 5.0))
        if stop.is_set():
            break
        name, instance = rng.choice(names), str(90 + cycle)
        procs.start(name, instance)
        changes += 1
        log.append(f"{time.monotonic():.2f} added {name}-{instance}")
        # Removed only once it runs (a signal during its start-up would kill it, not stop it).
        started = f"instance {instance} started"
        logfile = procs.log_dir / f"{name}-{instance}.log"
        for _ in range(600):
            if logfile.exists() and started in logfile.read_text(errors="replace"):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(rng.uniform(5.0, 10.0))
        proc = procs.procs.pop(f"{name}-{instance}")  # out of the killer's reach first
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait)
        changes += 1
        log.append(f"{time.monotonic():.2f} removed {name}-{instance} (exit code {proc.returncode})")
    return changes


def describe_unfinished(journal: dict[str, list[Any]], run_ids: set[str], now_ms: float) -> dict[str, list[str]]:
    """A run that did not complete: its last journal events and how long ago each was appended, so a CI
    failure says where it stopped (waiting on a child, a tool, the model) rather than only a count."""
    tails: dict[str, list[str]] = {}
    for run_id in sorted(run_ids):
        entries = journal.get(run_id, [])
        tails[run_id] = [
            f"{type(e.event).__name__} step={getattr(e.event, 'step', '-')} {(now_ms - e.timestamp_ms) / 1000:.0f}s ago"
            for e in entries[-6:]
        ] or ["no events"]
    return tails


def report_first_difference(run_id: str, reference: list[tuple[str, ...]], observed: list[tuple[str, ...]]) -> None:
    """Print where the first differing run parts from its reference, so a failure can be read."""
    for index, (want, got) in enumerate(zip(reference, observed, strict=False)):
        if want != got:
            print(f"{run_id} differs at item {index}:\n  reference {want}\n  observed  {got}", file=sys.stderr)
            return
    print(f"{run_id}: {len(observed)} items against {len(reference)} in its reference", file=sys.stderr)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--steps", type=int, default=8, help="tool steps per run (model calls = steps + 1)")
    parser.add_argument("--scenarios", type=int, default=10)
    parser.add_argument("--effect-crash-rate", type=float, default=0.01)
    parser.add_argument("--reply-crash-rate", type=float, default=0.005)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--brokers", type=int, default=1, help="KRaft brokers (more than one: a local cluster)")
    parser.add_argument("--broker-kills", type=int, default=0, help="SIGKILLs of the journal's busiest leader")
    parser.add_argument("--broker-down-s", default="5", help="outage lengths, cycled over the kills (e.g. 5,120)")
    parser.add_argument("--instances", type=int, default=1, help="instances of every processor")
    parser.add_argument("--add-remove", type=int, default=0, help="times an instance is added, then removed")
    parser.add_argument("--layout", choices=("separate", "engine"), default="separate",
                        help="one OS process per processor, or every core in one `engine` process")  # fmt: skip
    parser.add_argument("--context", type=json.loads, default=None,
                        help='context settings of every run (reference runs too), e.g. \'{"mode": "on", '
                             '"trigger_tokens": 1000, "keep_turns": 1}\'')  # fmt: skip
    topo.add_topology_arguments(parser)
    parser.add_argument("--summary-crash-rate", type=float, default=None,
                        help="self-kills right after a summarization reply (default 0.2 with --context, else 0)")  # fmt: skip
    args = parser.parse_args()
    mix = topo.Mix.from_args(args)
    if args.context is not None and not isinstance(args.context, dict):
        raise SystemExit("--context must be a JSON object of context settings")
    summary_crash_rate = args.summary_crash_rate if args.summary_crash_rate is not None else 0.2 * bool(args.context)
    rng = random.Random(args.seed)
    t_start = time.monotonic()
    if args.broker_kills and os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        raise SystemExit("--broker-kills needs the bench's own local broker(s): unset KAFKA_BOOTSTRAP_SERVERS")
    downs = [float(x) for x in args.broker_down_s.split(",")]
    # What the killer, the extra instances and the churn pick from: a processor, or the engine.
    names = ("engine",) if args.layout == "engine" else PROCESSORS
    layout_env = {LAYOUT_ENV: args.layout}
    context = cluster_bench_settings("chaos", args.brokers) if args.brokers > 1 else bench_settings("chaos")
    async with context as (settings, kafka):
        scen_dir = settings.home / "scenarios"
        write_scenarios(scen_dir, [chaos_scenario(k, args.steps) for k in range(args.scenarios)] + mix.scenarios())
        watcher = TerminalWatcher(settings)
        try:
            print(f"reference: {args.scenarios} crash-free runs", file=sys.stderr)
            # Every tool the scenarios call must be registered before the first run starts: a run
            # pins the tools it may use when it starts, and an unknown one fails it.
            async with Deployment(settings, [scen_dir], extra_env=layout_env, wait_tools=mix.wait_tools(TOOLS),
                                  policies=mix.policies(AUTO_APPROVE_DEMO)) as calm:  # fmt: skip
                await mix.prepare(settings)
                reference_runs = await submit(
                    calm, args.scenarios, args.scenarios, args.steps, "reference", args.context, topo.PLAIN
                ) | await topo.submit_references(calm, mix, args.context)
                assert not await watcher.wait(set(reference_runs), args.timeout), "reference runs did not finish"

            chaos_env = {
                **layout_env,
                "AGENTSTREAM_CHAOS": f"tool_after_effect={args.effect_crash_rate},model_after_reply={args.reply_crash_rate},"
                f"summary_after_reply={summary_crash_rate}",
            }
            log: list[str] = []
            exits: list[str] = []
            in_flight: list[int] = []
            async with Deployment(settings, [scen_dir], extra_env=chaos_env, wait_tools=mix.wait_tools(TOOLS),
                                  policies=mix.policies(AUTO_APPROVE_DEMO)) as chaotic:  # fmt: skip
                assert chaotic.procs is not None
                for name in names:
                    for instance in range(1, args.instances):
                        chaotic.procs.start(name, str(instance))
                async with httpx.AsyncClient() as http:
                    await http.post(f"{chaotic.model_url}/_scripted/reset")
                print(f"chaos: {args.runs} concurrent runs, {args.kills} SIGKILLs, {args.broker_kills} broker "
                      f"SIGKILLs of {args.brokers}", file=sys.stderr)  # fmt: skip
                t_chaos = time.monotonic()
                stop = asyncio.Event()
                kill_task = asyncio.create_task(killer(chaotic, args.kills, rng, stop, log, exits))
                phase_task = asyncio.create_task(mix.phase_kills(settings, chaotic.procs, args.seed, stop, log))
                churn_task = asyncio.create_task(churn(chaotic.procs, names, args.add_remove, rng, stop, log))
                chaos_runs = await submit(chaotic, args.scenarios, args.runs, args.steps, "chaos", args.context, mix)
                journal_topic = load_topics(settings.topic_prefix)[JOURNAL].name

                def pending() -> int:
                    return len(set(chaos_runs) - set(watcher.ended))

                broker_chaos = broker_killer(Brokers(kafka), journal_topic, args.broker_kills, downs, rng, pending,
                                             log, in_flight)  # fmt: skip
                broker_task = asyncio.create_task(broker_chaos)
                lost_ids = await watcher.wait(set(chaos_runs), args.timeout)
                await broker_task  # a broker left down would fail the journal read below
                stop.set()
                await kill_task
                phase_kills = await phase_task
                rebalances = await churn_task
                chaos_wall = time.monotonic() - t_chaos
                async with httpx.AsyncClient() as http:
                    stats = (await http.get(f"{chaotic.model_url}/_scripted/stats")).json()
                assert chaotic.procs is not None
                restarts = sum(chaotic.procs.restarts.values())
                crashes_at = injected_crashes(chaotic.procs.log_dir)
        finally:
            watcher.close()
        journal = await read_journal(settings)
        transfers = bank_transfers(settings.bank_path)
        bank = bank_stats(settings.bank_path)

    # A child is a run of its own, checked against the same place in its scenario's reference tree.
    reference_tree, chaos_tree = topo.tree_members(journal, reference_runs), topo.tree_members(journal, chaos_runs)
    references = {k: comparable_trajectory(journal[r], r) for r, k in reference_tree.items()}
    # Where each scenario's crash-free run compacted (its steps and kinds): the chaos runs must match.
    compacted_at = {
        k: [f"{e.event.step}:{e.event.kind}" for e in journal[r] if isinstance(e.event, ContextCompacted)]
        for r, k in sorted(reference_runs.items(), key=lambda rk: str(rk[1]))
    }
    failed_references = {
        r: summarize(journal[r]).reason for r in reference_tree if summarize(journal[r]).status != "completed"
    } | topo.reference_errors(journal, reference_tree)
    if failed_references:
        # A reference that did not complete would count every chaos run of its scenario as differing.
        raise SystemExit(f"crash-free reference runs did not complete: {failed_references}")
    differing = steps_total = 0
    status_of: dict[str, str] = {}
    min_steps = 10**9
    statuses: dict[str, int] = {}
    requested_keys: set[str] = set()
    resent = compactions = summary_calls = summary_calls_redone = 0
    min_summaries = 10**9
    for run_id, k in chaos_tree.items():
        entries = journal.get(run_id, [])
        summary = summarize(entries)
        statuses[summary.status] = statuses.get(summary.status, 0) + 1
        status_of[run_id] = summary.status
        steps_total += summary.steps
        min_steps = min(min_steps, summary.steps)
        observed = comparable_trajectory(entries, run_id)
        if observed != references.get(k):
            differing += 1
            if differing == 1:
                report_first_difference(run_id, references.get(k, []), observed)
        summaries = {e.event.call_id for e in entries if isinstance(e.event, LlmCallRequested) and e.event.purpose == "compaction"}  # fmt: skip
        summary_calls += len(summaries)
        # A summarization call the model server answered more than once: a crash came between its
        # reply and the journal append, and the call was made again (legitimately: nothing journaled).
        summary_calls_redone += sum(1 for c in summaries if len(stats["calls"].get(c, [])) > 1)
        run_compactions = {e.event.compaction: e.event.kind for e in entries if isinstance(e.event, ContextCompacted)}
        compactions += len(run_compactions)
        min_summaries = min(min_summaries, sum(1 for kind in run_compactions.values() if kind == "summarize"))
        for entry in entries:
            event = entry.event
            if isinstance(event, ToolCallRequested) and event.tool == "transfer_funds":
                requested_keys.add(event.idempotency_key)
            if isinstance(event, LlmCallCompleted):
                receipts = stats["calls"].get(event.call_id, [])
                resent += sum(1 for t in receipts if t > entry.timestamp_ms)
    applied: dict[str, int] = {}
    for row in transfers:
        applied[row["idempotency_key"]] = applied.get(row["idempotency_key"], 0) + 1
    duplicate_effects = sum(n - 1 for n in applied.values() if n > 1)
    duplicate_effects += sum(
        1 for key in applied if key not in requested_keys and not key.startswith(tuple(reference_tree))
    )
    trees = topo.tree_outcomes(journal, chaos_runs, reference_tree, status_of)
    unfinished = {r for r, status in status_of.items() if status != "completed"}
    unfinished_tails = describe_unfinished(journal, unfinished, time.time() * 1000)
    for run_id, tail in unfinished_tails.items():
        print(f"not completed ({status_of[run_id]}): {run_id}\n  " + "\n  ".join(tail), file=sys.stderr)
    result = {
        "runs": args.runs,
        "completed": trees["completed"],
        "lost": len(lost_ids) + trees["lost_children"],
        "statuses": statuses,
        "not_completed": unfinished_tails,
        "duplicate_side_effects": duplicate_effects,
        "model_calls_resent": resent,
        "trajectories_differing": differing,
        "kills": sum(1 for line in log if "SIGKILL" in line and "SIGKILL broker" not in line),
        "brokers": args.brokers,
        "broker_kills": len(in_flight),
        "broker_down_s": downs,
        "runs_in_flight_at_broker_kills": in_flight,
        "layout": args.layout,
        "instances": args.instances,
        "rebalances": rebalances,
        "processor_exits": len(exits),
        "processor_exits_seen": exits,
        "self_crashes_at_injected_points": sum(1 for line in log if "crashed itself" in line),
        "crashes_by_point": crashes_at,
        "topologies": mix.report(trees, phase_kills, journal, chaos_tree, log),
        "context": args.context,
        "compactions": compactions,
        "summarization_calls": summary_calls,
        "min_summaries_per_run": min_summaries if chaos_runs else 0,
        "reference_compactions": compacted_at if args.context else {},
        "summary_crashes": crashes_at.get("summary_after_reply", 0),
        "summarization_calls_redone": summary_calls_redone,
        "restarts": restarts,
        "transfers_requested": len(requested_keys),
        "transfers_applied": sum(1 for key in applied if key in requested_keys),
        # re-driven transfers the bank recognised by their idempotency key: each one is a crash
        # that landed between the side effect and its journal append, closed by the key
        "transfer_redeliveries_deduplicated": bank["deduplicated"],
        "min_model_steps_per_run": min_steps,
        "model_steps_total": steps_total,
        "chaos_wall_s": round(chaos_wall, 1),
        "total_wall_s": round(time.monotonic() - t_start, 1),
    }
    for line in log:
        print(line, file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
