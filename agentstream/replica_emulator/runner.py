"""Serving a replica emulator with uvicorn: embedded in a running event loop (tests, benches that
start many replicas in one process) or as the main program of a process."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Generator

import uvicorn
from starlette.applications import Starlette

from agentstream.replica_emulator.profile import ReplicaProfile
from agentstream.replica_emulator.server import ReplicaEmulator


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # Embedded in someone else's process: SIGINT/SIGTERM belong to the host.
        yield


def bind(host: str, port: int) -> socket.socket:
    # Binding ourselves tells us the port picked for port 0 before serving, with no window for
    # another process to take it.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # An explicit IPPROTO_TCP makes asyncio set TCP_NODELAY; without it keep-alive responses stall
    # ~40 ms on Nagle + delayed ACK, which would swamp the latencies being emulated.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def url_of(host: str, sock: socket.socket) -> str:
    port = sock.getsockname()[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def config(app: Starlette) -> uvicorn.Config:
    # Access logs would cost more than an emulated request at bench rates.
    return uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2, timeout_keep_alive=30
    )


async def start(server: uvicorn.Server, sock: socket.socket) -> asyncio.Task[None]:
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()  # re-raises the start-up failure
            raise RuntimeError("replica emulator exited during start-up")
        await asyncio.sleep(0.005)
    return task


@contextlib.asynccontextmanager
async def running_emulator(
    profile: ReplicaProfile,
    replica_id: str = "r0",
    *,
    model_name: str = "emulated-8b",
    host: str = "127.0.0.1",
    port: int = 0,
) -> AsyncIterator[tuple[str, ReplicaEmulator]]:
    """Serves a fresh replica in this event loop; yields (base URL without `/v1`, the emulator)."""
    emulator = ReplicaEmulator(replica_id, profile, model_name)
    sock = bind(host, port)
    http = _EmbeddedServer(config(emulator.app))
    try:
        task = await start(http, sock)
    except BaseException:
        sock.close()
        raise
    try:
        yield url_of(host, sock), emulator
    finally:
        http.should_exit = True
        await task
