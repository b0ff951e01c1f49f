"""`agentstream signing-keys`: issue the processes' key bundles, rotate the signing roots."""

from __future__ import annotations

import argparse

from agentstream.config import Settings
from agentstream.credentials.signing_keys import (
    DEFAULT_RETIRE_AFTER_S,
    NEEDS,
    SigningRoots,
    bundle_path,
    ensure_key_bundles,
    roots_path,
    rotate_signing_keys,
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("signing-keys", help="issue key bundles or rotate the signing roots")
    keys_sub = keys.add_subparsers(dest="signing_command", required=True)
    keys_sub.add_parser("issue", help="write each process's key bundle (<home>/keys/<component>.keys.json)")
    keys_sub.add_parser("list", help="the signing roots: key id, current, retirement")
    rotate = keys_sub.add_parser("rotate", help="make a fresh root current; older ones retire after a window")
    rotate.add_argument("--retire-after-s", type=float, default=DEFAULT_RETIRE_AFTER_S,
                        help="how long signatures under the older roots still verify (default: a day)")  # fmt: skip


async def signing_command(settings: Settings, args: argparse.Namespace) -> int:
    if args.signing_command == "rotate":
        if args.retire_after_s < 0:
            print("agentstream: --retire-after-s must not be negative")
            return 2
        kid = rotate_signing_keys(settings, args.retire_after_s)
        print(f"signing root {kid} is current; older roots retire in {args.retire_after_s:.0f} s")
        return 0
    if args.signing_command == "issue":
        ensure_key_bundles(settings)
        for component in NEEDS:
            print(bundle_path(settings, component))
        return 0
    roots = SigningRoots(roots_path(settings))
    for kid, root in sorted(roots.roots.items()):
        state = "current" if kid == roots.current else f"retires at {root.retired_ms} ms" if root.retired_ms else ""
        print(f"{kid}  {state}".rstrip())
    return 0
