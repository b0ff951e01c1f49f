"""Run trees in the gateway's projection: which runs each run started, from the journal alone.

A child run is a run of its own, with its own journal key: its `RunRequested` (written by its
parent's orchestrator) names `parent_run_id`, `parent_call_id` and `depth`. The projection links
a child to its parent when it applies that request, whichever of the two it read first (a
child's request may be read before its parent's: they lie in different partitions, and after an
eviction the parent is read back only on demand), and only within one tenant: a request naming
another tenant's run as its parent is never linked. The parent's own events name its children
too (a `spawn_agent` call and its result, `views._summarise`), so a parent read back from the
journal, or after a restart, lists its children without this registry.

Bounded like the rest of the projection: links live in the parents' views (live runs and the
LRU), plus `max_pending` parents not held (their children's links, waiting for the parent to be
read back), least recently used leaving first.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from agentstream.contract.resources import RunTree, RunTreeNode
from agentstream.contract.vocab import RunStatus
from agentstream.gateway.views import ChildLink, Mailbox, RunView, StoredEvent

if TYPE_CHECKING:
    from agentstream.gateway.projection import RunIndex

TREE_MAX_DEPTH = 8  # levels below the run asked for
TREE_MAX_RUNS = 200  # runs in one tree answer or one tree stream
RESULT_CHARS = 500


class TreeWatch:
    """One tree stream's subscription: the runs of its tree so far (and the partition each lies
    in), and their events as the tail applies them."""

    __slots__ = ("mailbox", "partitions")

    def __init__(self) -> None:
        self.mailbox = Mailbox()
        self.partitions: dict[str, int] = {}

    @property
    def full(self) -> bool:
        return len(self.partitions) >= TREE_MAX_RUNS


class RunTrees:
    def __init__(self, runs: Mapping[str, RunView], max_pending: int = 1000) -> None:
        self._runs = runs
        self._max_pending = max_pending
        # parent run id -> {child run id: (child's tenant, parent call id)}, for parents not held
        self._pending: OrderedDict[str, dict[str, tuple[str, str]]] = OrderedDict()
        self._watches: dict[str, set[TreeWatch]] = {}

    # -- links -------------------------------------------------------------------------------------

    def joined(self, view: RunView) -> None:
        """A run came into memory (its request read, or the run read back): link it to its parent
        and its waiting children to it."""
        if view.parent_run_id:
            parent = self._runs.get(view.parent_run_id)
            if parent is None:
                self._park(view.parent_run_id, view.run_id, view.tenant_id, view.parent_call_id)
            elif parent.tenant_id == view.tenant_id:
                link = parent.children.setdefault(view.run_id, ChildLink(view.parent_call_id))
                link.status = view.public_status
                for watch in list(self._watches.get(parent.run_id, ())):
                    if self.add(watch, view):
                        # A run read back has events already: those past the stream's position go out.
                        for stored in view.events:
                            watch.mailbox.put(stored)
        waiting = self._pending.pop(view.run_id, None)
        for child_id, (tenant_id, call_id) in (waiting or {}).items():
            if tenant_id == view.tenant_id:
                child = self._runs.get(child_id)
                status = child.public_status if child is not None else RunStatus.QUEUED
                view.children.setdefault(child_id, ChildLink(call_id, status))

    def left(self, view: RunView) -> None:
        """A run left memory: its children's links wait for it to be read back."""
        for child_id, link in view.children.items():
            self._park(view.run_id, child_id, view.tenant_id, link.call_id)

    def _park(self, parent_id: str, child_id: str, tenant_id: str, call_id: str) -> None:
        self._pending.setdefault(parent_id, {})[child_id] = (tenant_id, call_id)
        self._pending.move_to_end(parent_id)
        while len(self._pending) > self._max_pending:
            self._pending.popitem(last=False)

    def applied(self, view: RunView, stored: StoredEvent) -> None:
        """An event the tail applied to `view`: its parent's link shows the new status, and the
        tree streams watching the run get the event."""
        if view.parent_run_id:
            parent = self._runs.get(view.parent_run_id)
            link = parent.children.get(view.run_id) if parent is not None else None
            if link is not None:
                link.status = view.public_status
        for watch in self._watches.get(view.run_id, ()):
            watch.mailbox.put(stored)

    def refresh(self, view: RunView) -> None:
        """The statuses of a run's children as the runs held show them (a run read back knows
        its children, not how they are doing)."""
        for child_id, link in view.children.items():
            child = self._runs.get(child_id)
            if child is not None and child.tenant_id == view.tenant_id:
                link.status = child.public_status

    # -- tree streams ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def watch(self) -> Iterator[TreeWatch]:
        watch = TreeWatch()
        try:
            yield watch
        finally:
            for run_id in watch.partitions:
                watches = self._watches.get(run_id)
                if watches is not None:
                    watches.discard(watch)
                    if not watches:
                        del self._watches[run_id]

    def add(self, watch: TreeWatch, view: RunView) -> bool:
        """`view`'s run joins the stream's tree (False: the tree is at its bound)."""
        if view.run_id in watch.partitions:
            return True
        if watch.full:
            return False
        watch.partitions[view.run_id] = view.partition
        self._watches.setdefault(view.run_id, set()).add(watch)
        return True

    def watched(self, run_id: str) -> bool:
        return run_id in self._watches


# -- the tree answer ---------------------------------------------------------------------------------


def _result(view: RunView) -> str | None:
    text = view.final_answer if view.status == RunStatus.COMPLETED else view.reason
    return text[:RESULT_CHARS] if text else None


async def run_tree(index: RunIndex, tenant_id: str, root: RunView) -> RunTree:
    """`root` and its descendants, breadth first (so a size cut keeps the upper levels whole):
    each read back from the journal if not held, and only the caller's tenant's."""
    shown: dict[str, list[RunView]] = {}
    level, runs, truncated = [root], 1, False
    for depth in range(TREE_MAX_DEPTH + 1):
        following: list[RunView] = []
        for view in level:
            index.trees.refresh(view)
            shown[view.run_id] = []
            if not view.children:
                continue
            if depth == TREE_MAX_DEPTH or runs >= TREE_MAX_RUNS:
                truncated = True
                continue
            for child_id, _link in view.ordered_children():
                if runs >= TREE_MAX_RUNS:
                    truncated = True
                    break
                child = await index.find(tenant_id, child_id)
                if child is None or child.run_id in shown or child.parent_run_id != view.run_id:
                    continue  # not (yet) readable, or not this tenant's: shown as a count only
                shown[view.run_id].append(child)
                following.append(child)
                runs += 1
        level = following
        if not level:
            break

    def node(view: RunView) -> RunTreeNode:
        return RunTreeNode(
            id=view.run_id, status=view.public_status, task=view.task, depth=view.depth,
            parent_run_id=view.parent_run_id or None, workflow=view.workflow or None, steps=view.steps,
            result=_result(view), children=[node(child) for child in shown.get(view.run_id, [])],
            children_count=len(view.children),
        )  # fmt: skip

    return RunTree(root=node(root), runs=runs, truncated=truncated, max_depth=TREE_MAX_DEPTH, max_runs=TREE_MAX_RUNS)
