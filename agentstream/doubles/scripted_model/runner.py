"""Running the scripted model server: in-process for tests (`running_scripted_model`) or as a
process (`python -m agentstream.doubles.scripted_model`) that announces its URL on stdout."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agentstream.doubles.scripted_model.http import serving
from agentstream.doubles.scripted_model.server import ScriptedModelServer

READY_PREFIX = "SCRIPTED_MODEL_READY"


@contextlib.asynccontextmanager
async def running_scripted_model(
    scenario_dirs: Iterable[str | Path] = (),
    default: str = "demo",
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    scenarios: Iterable[Mapping[str, Any]] = (),
    server: ScriptedModelServer | None = None,
) -> AsyncIterator[str]:
    """Serves the scripted model in this event loop and yields its base URL (no `/v1`).

    Pass `server` to keep a handle on it (stats, `add_scenario`); otherwise one is built from
    `scenario_dirs`, `default` and `scenarios`.
    """
    model = server or ScriptedModelServer(scenario_dirs, default, scenarios=scenarios)
    async with serving(model.handle, host, port) as url:
        yield url


async def _serve_forever(args: argparse.Namespace) -> None:
    model = ScriptedModelServer(args.scenarios, args.default, bundled=not args.no_bundled)
    if args.default not in model.scenario_names:
        raise SystemExit(f"default scenario {args.default!r} not found in {model.scenario_names}")
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)  # a supervisor's stop: exit 0
    async with serving(model.handle, args.host, args.port) as url:
        print(f"{READY_PREFIX} {url}", flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m agentstream.doubles.scripted_model",
        description="Scripted (fake) model server speaking the OpenAI and Anthropic wire protocols.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--scenarios", action="extend", nargs="+", default=[], metavar="DIR", help="extra scenario dirs"
    )
    parser.add_argument("--default", default="demo", help="scenario used when no [scenario:NAME] marker")
    parser.add_argument("--no-bundled", action="store_true", help="do not load the bundled scenarios")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop", help="event loop (uvloop: less CPU)")
    args = parser.parse_args(argv)
    loop_factory = None
    if args.loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(_serve_forever(args))
    except KeyboardInterrupt:
        sys.exit(130)
