"""`agentstream workflows register FILE | list | show NAME`: the workflow registry (explicit
graphs). With AGENTSTREAM_API_KEY set, through the API as that key's tenant; without it, the
operator's direct path on the registry topic, for `--tenant`. A refusal is one line on stderr, exit 1."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import orjson

from agentstream.cli.api import api_configured, via_api
from agentstream.client.http import RunsClient
from agentstream.config import Settings
from agentstream.registry.admin import read_catalog
from agentstream.workflows.book import describe, register_workflow
from agentstream.workflows.errors import WorkflowError


def add_workflows_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    workflows = sub.add_parser("workflows", help="the workflow registry: explicit graphs runs can follow")
    workflows.set_defaults(handler=_run)
    wsub = workflows.add_subparsers(dest="workflows_command", required=True)
    reg = wsub.add_parser("register", help="validate and register a definition (JSON file; a change is a new version)")
    reg.add_argument("file", type=Path)
    lst = wsub.add_parser("list", help="the latest version of each workflow")
    show = wsub.add_parser("show", help="one workflow's definition and versions")
    show.add_argument("name")
    show.add_argument("--version", default="", help="a registered version (default: the latest)")
    for parser in (reg, lst, show):
        parser.add_argument("--tenant", default="default", help="whose workflows, without an API key (operator)")


async def _run(args: argparse.Namespace) -> int:
    definition: Any = None
    if args.workflows_command == "register":
        try:
            definition = orjson.loads(args.file.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            print(f"agentstream: cannot read {args.file}: {exc}", file=sys.stderr)
            return 1
    if api_configured():
        return await via_api(lambda client: through_api(client, args, definition), not_found="no such workflow")
    try:
        return await direct(Settings.from_env(), args, definition)
    except WorkflowError as exc:
        print(f"agentstream: invalid workflow ({exc.kind}): {exc}", file=sys.stderr)
        return 1


async def through_api(client: RunsClient, args: argparse.Namespace, definition: Any) -> int:
    match args.workflows_command:
        case "register":
            version = await client.register_workflow(definition)
            print(f"workflow {version.name} version {version.version}")
        case "list":
            for found in await client.workflows():
                print(f"{found.name}\tv{found.version}\t{len(found.definition.get('nodes', []))} nodes")
        case _:
            detail = await client.workflow(args.name, args.version)
            print(json.dumps(detail.model_dump(), indent=2))
    return 0


async def direct(settings: Settings, args: argparse.Namespace, definition: Any) -> int:
    catalog = await read_catalog(settings)
    book = catalog.workflows
    match args.workflows_command:
        case "register":
            event, created = await register_workflow(settings, args.tenant, definition, book, "cli")
            print(f"workflow {event.name} version {event.version}" + ("" if created else " (unchanged)"))
        case "list":
            for name in book.names(args.tenant):
                found = book.get(args.tenant, name)
                assert found is not None
                print(f"{name}\tv{found.version}")
        case _:
            found = book.get(args.tenant, args.name, args.version)
            if found is None:
                print(f"agentstream: no workflow {args.name!r} for tenant {args.tenant}", file=sys.stderr)
                return 1
            print(json.dumps({**describe(found), "versions": book.version_list(args.tenant, args.name)}, indent=2))
    return 0
