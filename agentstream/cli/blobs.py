"""`agentstream blobs start|stop|status`: the local S3 server (SeaweedFS) of the blob store;
`agentstream blobs delete-run`: one run's blobs, by hand (blob_runs.py)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from agentstream.blobs.factory import local_s3
from agentstream.blobs.seaweed import LocalS3Error
from agentstream.cli.blob_runs import add_delete_run_parser, delete_run_command
from agentstream.config import Settings
from agentstream.settings import BlobSettings, load


def add_blobs_parser(sub: Any) -> None:
    blobs = sub.add_parser(
        "blobs", help="the blob store's local S3 server (SeaweedFS): start it (loopback, data in <home>/seaweedfs), "
        "stop it, or show the configured store and whether the server answers; delete one run's blobs",
    )  # fmt: skip
    actions = blobs.add_subparsers(dest="blobs_command", required=True, metavar="start|stop|status|delete-run")
    for action, what in (("start", "start the local S3 server"), ("stop", "stop it"),
                         ("status", "the configured store, and whether the local server answers")):  # fmt: skip
        actions.add_parser(action, help=what)
    add_delete_run_parser(actions)
    blobs.set_defaults(handler=blobs_command)


async def blobs_command(args: argparse.Namespace) -> int:
    if args.blobs_command == "delete-run":
        return await delete_run_command(args)
    settings = Settings.from_env()
    blobs = load(BlobSettings)
    server = local_s3(settings, blobs)
    try:
        if args.blobs_command == "start":
            took = await server.start()
            print(f"local S3 (SeaweedFS) answering at {server.endpoint()} ({took:.1f}s; log {server.log_file})")
            if blobs.backend != "s3" or blobs.s3_endpoint is not None:
                print("the blob store uses it with AGENTSTREAM_BLOB_STORE=s3 and no AGENTSTREAM_BLOB_S3_ENDPOINT")
            return 0
        if args.blobs_command == "stop":
            print("local S3 stopped" if await server.stop() else "no local S3 running")
            return 0
    except LocalS3Error as exc:
        print(f"agentstream blobs: {exc}", file=sys.stderr)
        return 1
    answers = await server.answers()
    where = (
        (blobs.s3_endpoint or "the local SeaweedFS")
        if blobs.backend == "s3"
        else str(blobs.resolved_dir(settings.home))
    )
    report = {"backend": blobs.backend, "where": where, "bucket": blobs.s3_bucket if blobs.backend == "s3" else None,
              "max_bytes": blobs.max_bytes, "local_s3": {"endpoint": server.endpoint(), "answers": answers,
                                                         "pid": server.running_pid(), "data": str(server.data_dir)}}  # fmt: skip
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    return 0
