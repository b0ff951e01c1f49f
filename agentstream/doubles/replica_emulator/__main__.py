"""`python -m agentstream.doubles.replica_emulator`: one emulated replica as a process.

It prints `ready http://HOST:PORT` once listening (the real port when `--port 0`), so a parent can
start several replicas and wait for each line.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from agentstream.doubles.replica_emulator.profile import DEFAULT_8B_H100, UNLIMITED_KV_TOKENS, ReplicaProfile
from agentstream.doubles.replica_emulator.server import ReplicaEmulator
from agentstream.serving import serve_and_announce

READY_PREFIX = "ready"


def _ms(value: float | None) -> float | None:
    return None if value is None else value / 1000


def profile_from_args(args: argparse.Namespace) -> ReplicaProfile:
    return DEFAULT_8B_H100.with_changes(
        kv_capacity_tokens=UNLIMITED_KV_TOKENS if args.infinite_kv else args.kv_tokens,
        prefill_s_per_token=_ms(args.prefill_ms_per_token),
        decode_s_per_token=_ms(args.decode_ms_per_token),
        max_running=args.max_running,
        time_scale=args.time_scale,
        decode_batch_slowdown=args.decode_batch_slowdown,
        prefill_chunk_tokens=args.prefill_chunk_tokens,
    )


def parser() -> argparse.ArgumentParser:
    d = DEFAULT_8B_H100
    p = argparse.ArgumentParser(
        prog="python -m agentstream.doubles.replica_emulator",
        description="An OpenAI-compatible model replica emulator with a KV cache (defaults: Llama-3.1-8B on H100).",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on the ready line)")
    p.add_argument("--replica-id", default="r0")
    p.add_argument("--model-name", default="emulated-8b")
    p.add_argument("--kv-tokens", type=int, default=None, help=f"KV cache capacity (default {d.kv_capacity_tokens})")
    p.add_argument("--infinite-kv", action="store_true", help="never evict (an oracle replica)")
    p.add_argument("--time-scale", type=float, default=None, help="multiplies every emulated duration")
    p.add_argument("--prefill-ms-per-token", type=float, default=None, help=f"default {d.prefill_s_per_token * 1e3:g}")
    p.add_argument("--decode-ms-per-token", type=float, default=None, help=f"default {d.decode_s_per_token * 1e3:g}")
    p.add_argument("--decode-batch-slowdown", type=float, default=None, help=f"default {d.decode_batch_slowdown:g}")
    p.add_argument(
        "--prefill-chunk-tokens",
        type=int,
        default=None,
        help=f"prompt tokens per step while a prefill shares steps with decodes (default {d.prefill_chunk_tokens}; "
        "0: prefill never slows decodes)",
    )
    p.add_argument("--max-running", type=int, default=None, help=f"default {d.max_running}")
    return p


async def _serve(args: argparse.Namespace, profile: ReplicaProfile) -> None:
    emulator = ReplicaEmulator(args.replica_id, profile, args.model_name)
    await serve_and_announce(emulator.app, "replica emulator", args.host, args.port, READY_PREFIX)


def main(argv: Sequence[str] | None = None) -> None:
    p = parser()
    args = p.parse_args(argv)
    try:
        profile = profile_from_args(args)
    except ValueError as exc:
        p.error(str(exc))
    try:
        asyncio.run(_serve(args, profile))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
