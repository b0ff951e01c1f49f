"""`agentstream connect start|stop|status`: the Kafka Connect worker that feeds the audit warehouse."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from agentstream.config import Settings
from agentstream.connect.journal import JOURNAL_CONNECTOR, dead_letters
from agentstream.connect.journal import dlq_topic as journal_dlq
from agentstream.connect.local import ensure_principal, local_worker, start_warehouse
from agentstream.connect.registry import REGISTRY_CONNECTOR
from agentstream.connect.registry import dlq_topic as registry_dlq
from agentstream.connect.worker import ConnectWorkerError
from agentstream.jvm import JarFetchError
from agentstream.resources import ResourceError
from agentstream.settings import WarehouseSettings, load
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
    warehouse = load(WarehouseSettings)
    try:
        if args.connect_command == "start":
            # The topics and their ACLs first: a broker that predates a grant (connect reading a
            # topic it now sinks) gets it here.
            await ensure_topics(settings)
            if warehouse.enabled:
                worker, took, sinks = await start_warehouse(settings, warehouse)
            else:
                worker, sinks = local_worker(settings, warehouse), []
                await ensure_principal(settings, worker)
                took = await worker.start()
            print(
                f"Connect worker answering at {worker.url} (group {worker.group}; {took:.1f}s; log {worker.log_file})"
            )
            for sink in sinks:
                print(f"{sink.name} sink running: {','.join(sink.topics)} -> {sink.table} in {sink.location}")
            return 0
        worker = local_worker(settings, warehouse)
        if args.connect_command == "stop":
            print("Connect worker stopped" if await worker.stop() else "no Connect worker running")
            return 0
        if not await worker.answers():
            print(f"no Connect worker answering at {worker.url}", file=sys.stderr)
            return 1
        names = await worker.request("GET", "/connectors")
        report: dict[str, Any] = {"worker": worker.url, "connectors": {
            name: await worker.request("GET", f"/connectors/{name}/status") for name in names
        }}  # fmt: skip
        # Per sink, the records the converter could not read: set aside, reasons in their headers.
        report["dead_letters"] = {name: {"topic": topic, "records": await dead_letters(settings, topic)}
                                  for name, topic in ((JOURNAL_CONNECTOR, journal_dlq(settings.topic_prefix)),
                                                      (REGISTRY_CONNECTOR, registry_dlq(settings.topic_prefix)))
                                  if name in names}  # fmt: skip
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return 0
    except (ConnectWorkerError, JarFetchError, ResourceError) as exc:
        print(f"agentstream connect: {exc}", file=sys.stderr)
        return 1
