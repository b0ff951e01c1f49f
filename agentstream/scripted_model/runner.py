"""Running the scripted model server: in-process for tests (`running_scripted_model`) or as a
process (`python -m agentstream.scripted_model`) that announces its URL on stdout."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
from collections.abc import AsyncIterator, Generator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import uvicorn

from agentstream.scripted_model.server import ScriptedModelServer

READY_PREFIX = "SCRIPTED_MODEL_READY"


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # Embedded in someone else's process: SIGINT/SIGTERM belong to the host, not to us.
        yield


def _bind(host: str, port: int) -> socket.socket:
    # Binding ourselves (rather than letting uvicorn do it) tells us the port chosen for port 0
    # before the server starts, with no window for another process to take it.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP must be explicit: asyncio only sets TCP_NODELAY on sockets whose proto says TCP,
    # and without it every keep-alive response stalls ~40 ms on Nagle + delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def _url(host: str, sock: socket.socket) -> str:
    port = sock.getsockname()[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _config(app: Any) -> uvicorn.Config:
    # Access logging costs more than the scripted reply itself at benchmark request rates.
    return uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
        timeout_keep_alive=30,
    )


async def _start(server: uvicorn.Server, sock: socket.socket) -> asyncio.Task[None]:
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()  # re-raises the start-up failure
            raise RuntimeError("scripted model server exited during start-up")
        await asyncio.sleep(0.005)
    return task


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
    sock = _bind(host, port)
    http = _EmbeddedServer(_config(model.app))
    try:
        task = await _start(http, sock)
    except BaseException:
        sock.close()
        raise
    try:
        yield _url(host, sock)
    finally:
        http.should_exit = True
        await task


async def _serve_forever(args: argparse.Namespace) -> None:
    model = ScriptedModelServer(args.scenarios, args.default, bundled=not args.no_bundled)
    if args.default not in model.scenario_names:
        raise SystemExit(f"default scenario {args.default!r} not found in {model.scenario_names}")
    sock = _bind(args.host, args.port)
    http = uvicorn.Server(_config(model.app))
    task = await _start(http, sock)
    print(f"{READY_PREFIX} {_url(args.host, sock)}", flush=True)
    await task


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m agentstream.scripted_model",
        description="Scripted (fake) model server speaking the OpenAI and Anthropic wire protocols.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--scenarios", action="extend", nargs="+", default=[], metavar="DIR", help="extra scenario dirs"
    )
    parser.add_argument("--default", default="demo", help="scenario used when no [scenario:NAME] marker")
    parser.add_argument("--no-bundled", action="store_true", help="do not load the bundled scenarios")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve_forever(args))
    except KeyboardInterrupt:
        sys.exit(130)
