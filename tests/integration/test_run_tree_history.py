"""Run trees in the gateway's bounded projection, against a real broker: a parent that left memory
(the LRU) and is read back from the journal still lists its children, including one whose
request was read while the parent was out; a restarted projection (a fresh process, nothing in
memory) lists a parent's children from the parent's own spawn calls."""

from __future__ import annotations

from agentstream import ids
from agentstream.client.journal import JournalClient
from agentstream.config import Settings
from agentstream.events import RunRequested, ToolCallRequested
from agentstream.gateway.projection import HistoryLimits
from tests.integration.test_history import TENANT, end_run, journal_run, journaled, projection, run_ids, until

__all__ = ["journaled"]  # the fixture


async def request_child(client: JournalClient, parent: str, step: int) -> str:
    call = ids.tool_call_id(parent, step, 0)
    child = ids.child_run_id(call)
    request = RunRequested(ids.run_requested_id(child), child, TENANT, "sub-task", "scripted", [], 5, child,
                           parent_run_id=parent, parent_call_id=call, depth=1)  # fmt: skip
    await client.append(request)
    return child


async def test_children_outlive_the_parents_eviction_and_a_restart(journaled: tuple[Settings, JournalClient]) -> None:
    settings, client = journaled
    parent = run_ids("tree", 1)[0]
    call = ids.tool_call_id(parent, 1, 0)
    async with projection(settings) as index:
        await journal_run(client, parent, halt=True)  # settled (so it can leave memory), not ended
        spawn = ToolCallRequested(ids.requested_event_id(call), parent, TENANT, 1, call, "t", "spawn_agent", "{}",
                                  call, 1)  # fmt: skip
        await client.append(spawn, as_writer="orchestrator")
        first = await request_child(client, parent, 1)
        await end_run(client, first)
        await until(lambda: parent in index.runs and first in index.runs[parent].children)
        for run_id in run_ids("filler", 4):
            await journal_run(client, run_id)
        await until(lambda: parent not in index.runs and first not in index.runs)
        second = await request_child(client, parent, 2)  # read while its parent is out of memory
        await until(lambda: second in index.runs)
        view = await index.find(TENANT, parent)
        assert view is not None and [c for c, _ in view.ordered_children()] == [first, second]
    # A fresh projection holds no link: the parent's own record of its spawn call names the child.
    async with projection(settings, HistoryLimits(recent_runs=3, window_events=0, checkpoint_s=0.2)) as again:
        view = await again.find(TENANT, parent)
        assert view is not None and first in view.children
