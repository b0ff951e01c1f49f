"""Following a run tree's event stream (`GET /v1/runs/{id}/events?tree=true`) from the SDK.

Its event ids are per-partition positions (agentstream.gateway.tree_stream), opaque here: the
client keeps the last one and reconnects with it, so each event is yielded once across dropped
connections. The server closes the stream once every run of the tree has settled; a close while
some run the client has seen is still going is a dropped connection, and is resumed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from agentstream.contract.vocab import RunStatus
from agentstream.events import TERMINAL_TYPES
from agentstream.sse import parse_sse


@dataclass(frozen=True)
class TreeEventMessage:
    """One message of a tree stream: `id` is the stream's position after it, `run_id` whose event it is."""

    id: str
    type: str
    run_id: str
    data: dict[str, Any]


class _Settling:
    """Which runs the client has seen, and which of them have settled (ended, or halted)."""

    def __init__(self) -> None:
        self.status: dict[str, RunStatus] = {}

    def see(self, message: TreeEventMessage) -> None:
        if message.type in TERMINAL_TYPES:
            self.status[message.run_id] = RunStatus.COMPLETED  # any end: only "settled" is asked
        elif message.type == "RunHalted":
            self.status[message.run_id] = RunStatus.HALTED
        elif message.type == "ResumeRequested" or message.run_id not in self.status:
            self.status[message.run_id] = RunStatus.RUNNING

    @property
    def all_settled(self) -> bool:
        return all(status.settled for status in self.status.values())


async def follow_tree(
    http: httpx.AsyncClient,
    run_id: str,
    last_event_id: str | None,
    *,
    max_reconnects: int,
    max_backoff_s: float,
    error: Callable[[httpx.Response], Exception],
) -> AsyncIterator[TreeEventMessage]:
    """`error(response)` builds the SDK's typed error for a refused request."""
    last, failures, seen = last_event_id or None, 0, _Settling()
    while True:
        headers = {"Accept": "text/event-stream"}
        if last:
            headers["Last-Event-ID"] = last
        try:
            async with http.stream(
                "GET", f"/v1/runs/{run_id}/events", params={"tree": "true"}, headers=headers
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise error(response)
                async for sse in parse_sse(response.aiter_bytes()):
                    if sse.id is None or sse.id == last:
                        continue  # a comment, or a replay of the last one delivered
                    payload = orjson.loads(sse.data)
                    message = TreeEventMessage(sse.id, sse.event or payload.get("type", ""), payload["run_id"], payload)
                    last, failures = message.id, 0
                    seen.see(message)
                    yield message
            if seen.all_settled:
                return  # closed by the server: every run of the tree has settled
            problem: Exception = httpx.RemoteProtocolError("the tree stream ended before its runs settled")
        except httpx.TransportError as exc:
            problem = exc
        failures += 1
        if failures > max_reconnects:
            raise problem
        await asyncio.sleep(min(max_backoff_s, 0.05 * 2**failures))
