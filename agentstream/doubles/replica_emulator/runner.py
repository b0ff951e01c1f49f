"""Serving a replica emulator with uvicorn: embedded in a running event loop (tests, benches that
start many replicas in one process) or as the main program of a process."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from agentstream.doubles.replica_emulator.profile import ReplicaProfile
from agentstream.doubles.replica_emulator.server import ReplicaEmulator
from agentstream.serving import serving_embedded


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
    async with serving_embedded(emulator.app, "replica emulator", host, port) as url:
        yield url, emulator
