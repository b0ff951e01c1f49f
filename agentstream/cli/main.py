"""`agentstream`: the command line. Each command is a thin wrapper over the library."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

from agentstream.cli import args as bounded
from agentstream.cli import commands
from agentstream.cli.alerts import add_alerts_parsers
from agentstream.cli.approvals import add_approvals_parser
from agentstream.cli.audit import add_audit_parser
from agentstream.cli.blobs import add_blobs_parser
from agentstream.cli.config import add_config_parser
from agentstream.cli.connect import add_connect_parser
from agentstream.cli.costs import add_cost_parsers
from agentstream.cli.memory import add_memory_parser
from agentstream.cli.mine import add_mine_parser
from agentstream.cli.quarantine import add_quarantine_parser
from agentstream.cli.rollout import add_rollout_parser
from agentstream.cli.secrets import add_secrets_parser
from agentstream.cli.signing import add_parser as add_signing_parser
from agentstream.cli.tenants import add_parsers as add_tenancy_parsers
from agentstream.cli.tools import add_tools_parser
from agentstream.cli.trees import add_tree_parser, workflow_ref
from agentstream.cli.workflows import add_workflows_parser
from agentstream.kafka.auth import ENGINE
from agentstream.processors.catalog import CORES
from agentstream.settings import SettingsError
from agentstream.tools.shadow_cli import add_shadow_parser


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agentstream", description="Durable AI-agent runs on Kafka.")
    sub = p.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="local Kafka + scripted model + all processors; blocks until Ctrl-C")
    dev.add_argument("--gateway-port", type=int, default=8080, help="the run API's port (default: 8080)")
    dev.add_argument(
        "--kafka-port", type=int, default=None,
        help="start the local broker on this port (its controller on the next; data in <home>/kafka-PORT) "
        "instead of 19092, so two deployments (each with its own AGENTSTREAM_HOME) can run side by side",
    )  # fmt: skip
    dev.add_argument("--scenarios", action="append", default=[], metavar="DIR",
                     help="a folder of scenario files for the scripted model (repeatable)")  # fmt: skip
    dev.set_defaults(handler=_dev)
    demo = sub.add_parser("demo", help="run a sample multi-step, multi-tool task offline, end to end")
    demo.add_argument("--keep-broker", action="store_true", help="leave the local broker running afterwards")

    run = sub.add_parser(
        "run", help="request a run (the stack must be running: `agentstream dev`)", epilog=commands.FOLLOW_EXIT_CODES
    )
    run.add_argument("task")
    run.add_argument("--model", default="scripted")
    run.add_argument("--tool", action="append", default=[], help="allowed tool (repeatable; default: all)")
    run.add_argument("--max-steps", type=bounded.max_steps, default=20, help="model calls before the run halts")
    run.add_argument("--tenant", default="default")
    run.add_argument("--follow", action="store_true", help="print the trajectory live until the run ends or halts")
    run.add_argument("--budget-usd", type=bounded.budget_usd, default=0.0, help="hard dollar cap (default: none)")
    run.add_argument(
        "--budget-tokens", type=bounded.budget_tokens, default=0, help="hard model-token cap (default: none)"
    )
    run.add_argument(
        "--budget-wall-s",
        type=bounded.budget_wall_s,
        default=0.0,
        help="hard wall-clock cap in seconds (default: none)",
    )
    run.add_argument("--on-loop", choices=["halt", "warn"], default="halt", help="what a detected loop does")
    run.add_argument(
        "--context", type=bounded.context_settings, default=None, metavar="JSON",
        help='context settings over the tenant\'s defaults, e.g. \'{"mode": "on", "trigger_tokens": 32000}\' '
        "(fields: mode, trigger_tokens, keep_turns, summarize, summary_tier, exclude_tools)",
    )  # fmt: skip
    run.add_argument("--compact", action="store_true",
                     help='context management on (`"mode": "on"` over --context and the defaults)')  # fmt: skip
    run.add_argument("--workflow", type=workflow_ref, default=None, metavar="NAME[@VERSION]",
                     help="a graph run of this registered workflow (its latest version without @VERSION)")  # fmt: skip

    runs = sub.add_parser("runs", help="inspect runs")
    runs_sub = runs.add_subparsers(dest="runs_command", required=True)
    show = runs_sub.add_parser("show", help="a run reconstructed from its journal alone")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true")
    show.add_argument(
        "--fetch-blobs", action="store_true",
        help="print each offloaded tool result in full, read from the blob store (operator path: no API key)",
    )  # fmt: skip
    add_tree_parser(runs_sub)
    cancel = runs_sub.add_parser("cancel", help="request cancellation of a run")
    cancel.add_argument("run_id")
    cancel.add_argument("--reason", default="cancelled from the CLI")
    resume = runs_sub.add_parser("resume", help="resume a run halted at a resumable limit, with more steps")
    resume.add_argument("run_id")
    resume.add_argument("--add-steps", type=bounded.add_steps, default=10)
    resume.add_argument("--add-usd", type=bounded.add_usd, default=0.0, help="raise the run's dollar cap by this much")
    resume.add_argument(
        "--add-tokens", type=bounded.add_tokens, default=0, help="raise the run's token cap by this much"
    )
    resume.add_argument(
        "--add-wall-s", type=bounded.add_wall_s, default=0.0, help="raise the run's wall-clock cap by this much"
    )
    resume.add_argument("--reason", default="resumed from the CLI")

    replay = sub.add_parser("replay", help="re-drive the orchestrator over a recorded journal and diff")
    replay.add_argument("run_id")
    add_shadow_parser(sub)

    topics = sub.add_parser("topics", help="create or verify the topics of topics.yaml")
    topics.add_argument("action", choices=["create", "verify"])

    kafka = sub.add_parser("kafka", help="the embedded local broker")
    kafka.add_argument("action", choices=["start", "stop", "status"])
    kafka.add_argument(
        "--brokers", type=int, default=1,
        help="start: this many KRaft brokers (3: a replicated cluster, topics at RF 3, min.insync 2)",
    )  # fmt: skip

    sub.add_parser("status", help="processor lag, throughput and error counters")

    gateway = sub.add_parser("gateway", help="serve the run API (HTTP) in this process")
    gateway.add_argument("--host", default="127.0.0.1")
    gateway.add_argument("--port", type=int, default=8080)
    add_tenancy_parsers(sub)
    add_secrets_parser(sub)
    add_memory_parser(sub)
    add_quarantine_parser(sub)
    add_alerts_parsers(sub)
    add_mine_parser(sub)
    add_rollout_parser(sub)
    add_tools_parser(sub)
    add_workflows_parser(sub)
    add_cost_parsers(sub)
    add_approvals_parser(sub)
    add_signing_parser(sub)
    add_config_parser(sub)
    add_connect_parser(sub)
    add_blobs_parser(sub)
    add_audit_parser(sub)

    proc = sub.add_parser(
        "process", help="run one processor in this process, or `engine`: every processor in one process"
    )
    proc.add_argument("name", choices=[*CORES, ENGINE])
    proc.add_argument("--instance", default="0")
    return p


async def _dev(args: argparse.Namespace) -> int:
    from agentstream.cli.local import dev_command  # brings up a deployment: imported only for `dev`

    return await dev_command(args)


def _loop_factory(command: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    # The gateway fans events out to many sockets and the processors make many small HTTP calls and
    # hand-offs: uvloop's transports and scheduling cost a fraction of asyncio's there.
    if command in ("gateway", "process"):
        import uvloop

        return uvloop.new_event_loop
    return None


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        # A command module may route itself (`handler`) instead of going through `commands.dispatch`.
        handler = getattr(args, "handler", None)
        with asyncio.Runner(loop_factory=_loop_factory(args.command)) as runner:
            code = runner.run(handler(args) if handler is not None else commands.dispatch(args))
    except KeyboardInterrupt:
        code = 130
    except SettingsError as exc:
        # A variable whose value does not fit its type: said once, without a traceback.
        print(f"agentstream: {exc}", file=sys.stderr)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()
