"""A run's event stream (`GET /v1/runs/{id}/events`): the backlog after Last-Event-ID, then live.

Bounded in time by what it streams: it ends once the run has settled (ended, or halted and waiting
for a resume: a client resumes the run and reconnects with Last-Event-ID) and everything up to
that point is sent; and by who reads it: the caller's key is checked again every `recheck_s`, so
a revoked key's open stream closes within that bound instead of living as long as the run.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from agentstream.events import TERMINAL_TYPES
from agentstream.gateway.console_api import truncated_sse
from agentstream.gateway.projection import RunIndex, RunView
from agentstream.gateway.views import Mailbox, StoredEvent

REVOKED = b": closed: this stream's API key is no longer valid\n\n"
KEEPALIVE = b": keep-alive\n\n"


def _done(view: RunView, last: int) -> bool:
    """Settled, with every event the run has sent: nothing more will come without a resume."""
    return view.settled and (not view.events or view.events[-1].offset <= last)


async def run_events(
    index: RunIndex,
    view: RunView,
    last: int,
    still_authorized: Callable[[], bool],
    *,
    keepalive_s: float,
    recheck_s: float,
    truncate: int = 0,
) -> AsyncIterator[bytes]:
    # Subscribe before reading the backlog: nothing appended in between is missed, and the
    # offset check drops what both paths deliver.
    async with index.subscribe(view.run_id) as mailbox:
        for stored in list(view.events):
            if stored.offset > last:
                last = stored.offset
                yield truncated_sse(stored, view.run_id, truncate)
                if stored.event.type_name in TERMINAL_TYPES:
                    return
        if _done(view, last):
            return  # at or past the run's end (or its halt) already: an open stream would idle forever
        ended = False

        def fresh(ready: list[StoredEvent]) -> list[bytes]:
            nonlocal last, ended
            chunk = []
            for stored in ready:
                if stored.offset > last:
                    last = stored.offset
                    chunk.append(truncated_sse(stored, view.run_id, truncate))
                    ended = ended or stored.event.type_name in TERMINAL_TYPES
            return chunk

        async for sent in paced(mailbox, fresh, lambda: ended or _done(view, last), still_authorized,
                                keepalive_s=keepalive_s, recheck_s=recheck_s):  # fmt: skip
            yield sent


async def paced(
    mailbox: Mailbox,
    fresh: Callable[[list[StoredEvent]], list[bytes]],
    done: Callable[[], bool],
    still_authorized: Callable[[], bool],
    *,
    keepalive_s: float,
    recheck_s: float,
) -> AsyncIterator[bytes]:
    """The live part of a stream: what `fresh` makes of each batch the mailbox holds (whatever is
    ready goes out in one write), a keep-alive when nothing was sent for `keepalive_s`, the key
    checked every `recheck_s`; until `done`."""
    now = time.monotonic()
    next_check, next_keepalive = now + recheck_s, now + keepalive_s
    while True:
        ready = await mailbox.take(max(0.0, min(next_check, next_keepalive) - time.monotonic()))
        now = time.monotonic()
        if now >= next_check:
            if not still_authorized():
                yield REVOKED
                return
            next_check = now + recheck_s
        chunk = fresh(ready)
        if chunk:
            yield b"".join(chunk)
            next_keepalive = time.monotonic() + keepalive_s
        elif now >= next_keepalive:
            yield KEEPALIVE
            next_keepalive = now + keepalive_s
        if done():
            return
