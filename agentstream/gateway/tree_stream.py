"""A run tree's event stream (`GET /v1/runs/{id}/events?tree=true`): the run's events and every
descendant's, each message's `run_id` saying whose, catch-up then live.

Resuming without a gap or a duplicate. A run lives in one journal partition, and the projection
applies each partition's records in offset order, so the stream sends the events of each
partition in offset order too (the backlog is merged partition by partition, the live part
arrives that way). Its position is then one offset per partition: the id of each message is
that vector as it stands after the message, `<partition>:<offset>` joined by `.` with the
partitions ascending (`0:1520.3:877`), and a reconnect with `Last-Event-ID: <that id>` sends
exactly the tree's events past it in each partition. A plain offset (the single-run stream's id)
is a position in the root's own partition.

Bounded like the single-run stream: it ends once every run of the tree has settled (ended, or
halted waiting for a resume) and all their events are sent; the caller's key is checked again
every `recheck_s`; at most TREE_MAX_RUNS runs are followed (the runs past that bound are left
out, as in `GET /v1/runs/{id}/tree`).
"""

from __future__ import annotations

import heapq
from collections.abc import AsyncIterator, Callable

from agentstream.contract.queries import ANY_EVENT_ID
from agentstream.gateway.errors import ApiError
from agentstream.gateway.projection import RunIndex, RunView
from agentstream.gateway.streams import paced
from agentstream.gateway.trees import TreeWatch
from agentstream.gateway.views import StoredEvent

Position = dict[int, int]  # journal partition -> the last offset sent there


def parse_position(raw: str, own_partition: int) -> Position:
    """A Last-Event-ID as a position; either form is taken by either stream (ANY_EVENT_ID_PATTERN)."""
    if not ANY_EVENT_ID.fullmatch(raw):
        raise ApiError(
            400, "invalid_header", "Last-Event-ID must be an event id from this stream", field="Last-Event-ID"
        )
    if not raw:
        return {}
    if ":" not in raw:
        return {own_partition: int(raw)}
    pairs = (part.split(":") for part in raw.split("."))
    return {int(partition): int(offset) for partition, offset in pairs}


def position_id(position: Position) -> bytes:
    return ".".join(f"{p}:{o}" for p, o in sorted(position.items())).encode()


def _frame(position: Position, stored: StoredEvent) -> bytes:
    # The stored message with the tree position as its id: its event and data lines as they are.
    return b"id: " + position_id(position) + stored.sse[stored.sse.index(b"\n") :]


async def _gather(index: RunIndex, tenant_id: str, root: RunView, watch: TreeWatch) -> None:
    """Every run of the tree into the watch, breadth first (each read back if not held). Runs the
    tail links meanwhile join it by themselves (RunTrees.joined)."""
    level = [root]
    index.trees.add(watch, root)
    while level and not watch.full:
        following: list[RunView] = []
        for view in level:
            for child_id, _link in view.ordered_children():
                child = await index.find(tenant_id, child_id)
                if child is None or child.parent_run_id != view.run_id or child.run_id in watch.partitions:
                    continue
                if not index.trees.add(watch, child):
                    return
                following.append(child)
        level = following


def _backlog(index: RunIndex, watch: TreeWatch, position: Position) -> list[tuple[int, StoredEvent]]:
    """What the tree holds past `position`, each partition in offset order, merged by time."""
    by_partition: dict[int, list[StoredEvent]] = {}
    for run_id, partition in watch.partitions.items():
        view = index.runs.get(run_id)
        if view is None:
            continue
        after = position.get(partition, -1)
        by_partition.setdefault(partition, []).extend(s for s in view.events if s.offset > after)
    lanes = [
        [(s.timestamp_ms, p, s) for s in sorted(events, key=lambda s: s.offset)] for p, events in by_partition.items()
    ]
    # heapq.merge keeps each lane's own order, so a partition's offsets still only grow.
    return [(p, s) for _t, p, s in heapq.merge(*lanes, key=lambda item: (item[0], item[1]))]


def _done(index: RunIndex, watch: TreeWatch, position: Position) -> bool:
    for run_id, partition in watch.partitions.items():
        view = index.runs.get(run_id)
        if view is None:
            continue
        if not view.settled or (view.events and view.events[-1].offset > position.get(partition, -1)):
            return False
    return True


async def tree_events(
    index: RunIndex,
    tenant_id: str,
    root: RunView,
    position: Position,
    still_authorized: Callable[[], bool],
    *,
    keepalive_s: float,
    recheck_s: float,
) -> AsyncIterator[bytes]:
    position = dict(position)

    def fresh(partition: int, stored: StoredEvent) -> bytes | None:
        if stored.offset <= position.get(partition, -1):
            return None  # sent already (in the backlog, or before the reconnect)
        position[partition] = stored.offset
        return _frame(position, stored)

    # Watched before the backlog is read: nothing applied in between is missed, and the position
    # drops what both deliver.
    with index.trees.watch() as watch:
        await _gather(index, tenant_id, root, watch)
        chunk = [frame for p, s in _backlog(index, watch, position) if (frame := fresh(p, s)) is not None]
        if chunk:
            yield b"".join(chunk)
        if _done(index, watch, position):
            return

        def live(ready: list[StoredEvent]) -> list[bytes]:
            partitions = watch.partitions
            return [
                frame
                for s in ready
                if s.event.run_id in partitions and (frame := fresh(partitions[s.event.run_id], s)) is not None
            ]

        async for sent in paced(watch.mailbox, live, lambda: _done(index, watch, position), still_authorized,
                                keepalive_s=keepalive_s, recheck_s=recheck_s):  # fmt: skip
            yield sent
