"""Serving an ASGI app with uvicorn on a socket we bind ourselves: embedded in a running event loop
(tests, benches) or as the main program of a process that announces its URL on stdout."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Generator
from typing import Any

import uvicorn


class EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # Embedded in someone else's process: SIGINT/SIGTERM belong to the host, not to us.
        yield


def bind(host: str, port: int) -> socket.socket:
    # Binding ourselves (rather than letting uvicorn do it) tells us the port chosen for port 0
    # before the server starts, with no window for another process to take it.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP must be explicit: asyncio only sets TCP_NODELAY on sockets whose proto says TCP,
    # and without it every keep-alive response stalls ~40 ms on Nagle + delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def url_of(host: str, sock: socket.socket) -> str:
    port = sock.getsockname()[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def server_config(app: Any) -> uvicorn.Config:
    # Access logging costs more than a scripted or emulated reply at benchmark request rates.
    return uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2, timeout_keep_alive=30
    )


async def start(server: uvicorn.Server, sock: socket.socket, what: str) -> asyncio.Task[None]:
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()  # re-raises the start-up failure
            raise RuntimeError(f"{what} exited during start-up")
        await asyncio.sleep(0.005)
    return task


@contextlib.asynccontextmanager
async def serving_embedded(app: Any, what: str, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serves `app` in this event loop until the block ends; yields its base URL."""
    sock = bind(host, port)
    http = EmbeddedServer(server_config(app))
    try:
        task = await start(http, sock, what)
    except BaseException:
        sock.close()
        raise
    try:
        yield url_of(host, sock)
    finally:
        http.should_exit = True
        await task


async def serve_and_announce(app: Any, what: str, host: str, port: int, ready_prefix: str) -> None:
    """Serves `app` as this process's main program, printing `<ready_prefix> <url>` once listening."""
    sock = bind(host, port)
    http = uvicorn.Server(server_config(app))
    task = await start(http, sock, what)
    print(f"{ready_prefix} {url_of(host, sock)}", flush=True)
    await task
