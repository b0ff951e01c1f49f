"""`agentstream connect start|stop|status`: the Kafka Connect worker that feeds the audit warehouse."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from agentstream.config import Settings
from agentstream.connect.local import ensure_principal, local_worker
from agentstream.connect.worker import ConnectWorkerError
from agentstream.jvm import JarFetchError
from agentstream.stack import ensure_topics


def add_connect_parser(sub: Any) -> None:
    connect = sub.add_parser("connect", help="the Kafka Connect worker of the audit warehouse")
    actions = connect.add_subparsers(dest="connect_command", required=True)
    actions.add_parser("start", help="start the worker (distributed mode) against the configured Kafka")
    actions.add_parser("stop", help="stop the worker this home started")
    actions.add_parser("status", help="whether the worker answers, and its connectors' states")
    connect.set_defaults(handler=connect_command)


async def connect_command(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    try:
        worker = local_worker(settings)
        if args.connect_command == "start":
            await ensure_topics(settings)
            await ensure_principal(settings, worker)
            took = await worker.start()
            print(
                f"Connect worker answering at {worker.url} (group {worker.group}; {took:.1f}s; log {worker.log_file})"
            )
            return 0
        if args.connect_command == "stop":
            print("Connect worker stopped" if await worker.stop() else "no Connect worker running")
            return 0
        if not await worker.answers():
            print(f"no Connect worker answering at {worker.url}", file=sys.stderr)
            return 1
        names = await worker.request("GET", "/connectors")
        report = {name: await worker.request("GET", f"/connectors/{name}/status") for name in names}
        print(orjson.dumps({"worker": worker.url, "connectors": report}, option=orjson.OPT_INDENT_2).decode())
        return 0
    except (ConnectWorkerError, JarFetchError) as exc:
        print(f"agentstream connect: {exc}", file=sys.stderr)
        return 1
