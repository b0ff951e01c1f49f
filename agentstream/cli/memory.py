"""`agentstream memory list|export --tenant T`: a tenant's long-term memory, as the operator.

Reads the `memory` topic (the index) and, for `export`, the blob store of this home as the tenant
(like `runs show --fetch-blobs`: the operator's path, not the API). A user error is one line on
stderr and exit code 1; an export with a file that cannot be read prints the others, names it on
stderr and exits 1.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson

from agentstream.blobs.factory import open_blob_store
from agentstream.config import Settings
from agentstream.memory.admin import MemoryAdminError, export_memory, list_memory


def add_memory_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    memory = sub.add_parser("memory", help="list and export a tenant's long-term memory files")
    memory_sub = memory.add_subparsers(dest="memory_command", required=True)
    list_cmd = memory_sub.add_parser("list", help="a tenant's memory files: path, size, version, last change")
    list_cmd.add_argument("--tenant", required=True)
    list_cmd.add_argument("--json", action="store_true", help="one JSON list instead of a table")
    export = memory_sub.add_parser("export", help="a tenant's memory as JSON: {path: content}")
    export.add_argument("--tenant", required=True)
    export.add_argument("--out", type=Path, help="write the JSON to this file (created 0600) instead of stdout")
    # `main` runs this directly, ahead of `commands.dispatch`.
    memory.set_defaults(handler=run_memory_command)


async def run_memory_command(args: argparse.Namespace) -> int:
    return await memory_command(Settings.from_env(), args)


async def memory_command(settings: Settings, args: argparse.Namespace) -> int:
    try:
        if args.memory_command == "list":
            files = await list_memory(settings, args.tenant)
            if args.json:
                rows = [{"path": f.path, "size": f.size, "version": f.version, "updated_ms": f.updated_ms,
                         "blob": f.blob} for f in files]  # fmt: skip
                print(orjson.dumps(rows).decode())
            elif not files:
                print(f"no memory files for tenant {args.tenant}")
            else:
                print(f"{'size':>8} {'version':>7}  {'updated (UTC)':<19}  path")
                for f in files:
                    updated = datetime.fromtimestamp(f.updated_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
                    print(f"{f.size:>8} {f.version:>7}  {updated:<19}  {f.path}")
            return 0
        store = open_blob_store(settings)
        try:
            exported = await export_memory(settings, args.tenant, store)
        finally:
            await store.close()
    except MemoryAdminError as exc:
        print(f"agentstream: {exc}", file=sys.stderr)
        return 1
    data = orjson.dumps(exported.files, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
    if args.out is None:
        sys.stdout.write(data.decode() + "\n")
    else:
        # Memory is the tenant's private data: the file is the operator's alone.
        args.out.touch(mode=0o600, exist_ok=True)
        args.out.chmod(0o600)
        args.out.write_bytes(data + b"\n")
        print(f"exported {len(exported.files)} memory files of tenant {args.tenant} to {args.out}", file=sys.stderr)
    for path, reason in sorted(exported.errors.items()):
        print(f"agentstream: {path} not exported: {reason}", file=sys.stderr)
    return 1 if exported.errors else 0
