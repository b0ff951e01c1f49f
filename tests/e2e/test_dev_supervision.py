"""`agentstream dev` supervises the broker it uses (localcluster.supervise): a SIGKILLed broker is
restarted, with one log line per state change, and its clients find it again. On a real broker of
its own (free ports), not the session's: the test kills it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from pathlib import Path

import pytest

from agentstream.localcluster import supervise
from agentstream.localkafka import LocalKafka, free_port

# Kills and restarts brokers on a timing budget: run alone, after the parallel part (README).
pytestmark = pytest.mark.serial


async def _until(condition: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("condition never held")


async def test_a_killed_broker_is_restarted_with_one_line_per_state_change(tmp_path: Path) -> None:
    kafka = LocalKafka(
        tmp_path / "kafka", port=free_port(), controller_port=free_port(), credentials_dir=tmp_path / "keys"
    )
    await kafka.start()
    lines: list[str] = []
    stop = asyncio.Event()
    watch = asyncio.create_task(supervise([kafka], stop, lines.append, interval_s=0.2))
    try:
        await asyncio.sleep(1.0)
        assert lines == []  # a healthy broker: nothing to say
        for outage in (1, 2):
            first_pid = kafka.running_pid()
            await kafka.kill()
            await _until(lambda n=outage: len(lines) == 2 * n, 90)
            assert lines[-2:] == [
                f"Kafka broker 1 ({kafka.bootstrap}) exited; restarting it",
                f"Kafka broker 1 ({kafka.bootstrap}) is back",
            ]
            assert kafka.running_pid() not in (None, first_pid)
            assert await kafka.is_ready(5.0)  # SCRAM users and data survived the restart
        await asyncio.sleep(1.0)
        assert len(lines) == 4  # and nothing more while it stays up
        # A restart that fails (its port taken) is said once, retried, and the recovery said once.
        await kafka.kill()
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", kafka.port))
            squatter.listen()
            await _until(lambda: len(lines) == 6, 90)
            await asyncio.sleep(3.0)  # more failed attempts, no more lines
            assert len(lines) == 6
        await _until(lambda: len(lines) == 7, 90)
        assert lines[4:] == [
            f"Kafka broker 1 ({kafka.bootstrap}) exited; restarting it",
            f"Kafka broker 1 ({kafka.bootstrap}) failed to restart, retrying: the local broker exited with code 1:",
            f"Kafka broker 1 ({kafka.bootstrap}) is back",
        ]
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
        await kafka.stop()
