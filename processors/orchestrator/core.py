"""The orchestrator as a processor core: load a run's state, evolve it, decide, save it."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping

from agentstream import ids
from agentstream.events import BudgetReserved, Event, RunEvent, RunFailed
from agentstream.kafka.core import Outcome
from agentstream.kafka.state import EndedRuns, PartitionStore
from agentstream.processors.orchestrator.decide import OrchestratorConfig, decide
from agentstream.processors.orchestrator.evolve import evolve
from agentstream.processors.orchestrator.loops import denial_action
from agentstream.processors.orchestrator.state import RunState
from agentstream.processors.orchestrator.subagents import finish, keeps_in_flight
from agentstream.processors.orchestrator.versions import (
    BASELINE,
    OrchestratorVersion,
    UnknownVersionError,
    VersionRegistry,
    choose_version,
)
from agentstream.registry.entry import TenantPolicy, ToolEntry
from agentstream.registry.pins import pin_of
from agentstream.rollout.rings import Rollout
from agentstream.subagents import SPAWN_AGENT

HANDLED = frozenset(
    {
        "RunRequested", "RunStarted", "CancelRequested", "LlmCallRequested", "LlmCallCompleted",
        "LlmCallFailed", "ToolCallRequested", "ToolCallCompleted", "RunHalted", "ResumeRequested", "RunCompleted", "RunFailed", "RunCancelled",
        "BudgetExceeded", "LoopDetected", "RunFlagged", "PolicyDecided", "ApprovalDecided", "ContextCompacted",
        "EvalVerdict", "BudgetReserved",
    }
)  # fmt: skip


def run_key(run_id: str) -> str:
    return f"run/{run_id}"


def active_key(run_id: str) -> str:
    return f"active/{run_id}"


# Ended runs keep only a marker (keys "ended/..."), so that a re-sent RunRequested of a finished
# run starts nothing: kept for the last ENDED_KEEP runs that ended in the partition. A re-send here
# is a concurrent duplicate (two gateway requests with one Idempotency-Key name one run) or a
# writer's retry, seconds after the first; a key re-used later is answered by the gateway from
# its run index before anything is journaled. One arriving after that many later runs ended would
# start the run again. The run's history is the journal's, not the state's.
ENDED_KEEP = 10_000  # the bound and its reason: agentstream/calls.py CLOSED_KEEP


class OrchestratorCore:
    name = "orchestrator"

    def __init__(
        self,
        tools_for: Callable[[str], Mapping[str, ToolEntry]],
        config: OrchestratorConfig | None = None,
        policy_for: Callable[[str], TenantPolicy] | None = None,
        *,
        ended_keep: int = ENDED_KEEP,
        versions: VersionRegistry | None = None,
        rollout_for: Callable[[], Rollout | None] | None = None,
        workflows_for: Callable[[str, str, str], str] | None = None,
    ) -> None:
        self._ended = EndedRuns("ended/", ended_keep)
        self.tools_for = tools_for  # a tenant's visible tools (platform and its own), latest versions
        self.policy_for = policy_for or (lambda _tenant: TenantPolicy())  # read when a run starts, then pinned
        self.config = config or OrchestratorConfig()
        # `config` alone (tests, benches): it is the baseline version's behaviour.
        self.versions = versions or VersionRegistry([OrchestratorVersion(BASELINE, self.config)])
        self.rollout_for = rollout_for or (lambda: None)  # the canary rollout in force, read at a run's start
        # (tenant, workflow, version or "" for the latest) -> the definition a graph run pins at start.
        self.workflows_for = workflows_for or (lambda _tenant, _name, _version: "")
        # Ids emitted but not yet read back: suppresses re-emitting an intent while it is in
        # flight. Memory only; after a restart a repeat is possible and harmless (same id).
        self._in_flight: OrderedDict[str, None] = OrderedDict()

    def accepts(self, type_name: str) -> bool:
        return type_name in HANDLED

    def apply(self, store: PartitionStore, event: Event, *, live: bool) -> Outcome:
        if not isinstance(event, RunEvent):
            return Outcome()
        if isinstance(event, BudgetReserved) and event.tool != SPAWN_AGENT:
            return Outcome()  # only a child's budget matters here (subagents.py)
        if not keeps_in_flight(event):
            self._in_flight.pop(event.event_id, None)
        raw = store.get(run_key(event.run_id))
        if raw is None and self._ended.ended(store, event.run_id):
            return Outcome()  # late events after the end are on the record and change nothing
        before = None if raw is None else RunState.load(raw)
        if before is not None and before.terminal:
            return Outcome()  # a store written before ended runs were deleted keeps their stubs
        after = evolve(event, before)
        if after is None:
            return Outcome()
        if after is not before:
            self._save(store, after, new=before is None)
        if not live:
            return Outcome()
        return Outcome(emit=self._decide(after))

    def still_wanted(self, store: PartitionStore, key: str) -> bool:
        return True  # the orchestrator starts no side effects

    def resume(self, store: PartitionStore) -> Outcome:
        out = Outcome()
        for key in list(store.keys_with_prefix("active/")):
            raw = store.get(run_key(key.removeprefix("active/")))
            if raw is not None:
                out.emit.extend(self._decide(RunState.load(raw)))
        return out

    def _decide(self, state: RunState) -> list[RunEvent]:
        if state.terminal:
            return []
        visible = self.tools_for(state.tenant_id) if state.status == "requested" else {}
        try:  # a started run decides with what it pinned, never with whatever is the default now
            version = self.versions.get(
                choose_version(self.versions, state, self.rollout_for(),
                               [visible[n].tier if n in visible else "irreversible" for n in state.tool_names])
                if state.status == "requested" else state.orchestrator_version
            )  # fmt: skip
        except UnknownVersionError as exc:
            return self._unseen(finish(state, [RunFailed(ids.terminal_id(state.run_id), state.run_id, state.tenant_id,
                                                         state.step, "unknown_version", str(exc))]))  # fmt: skip
        specs = {name: entry.spec for name, entry in visible.items()}
        versions = {name: entry.version for name, entry in visible.items()}
        pins = {name: pin_of(entry) for name, entry in visible.items()}
        policy = self.policy_for(state.tenant_id) if state.status == "requested" else None
        denials = policy.on_repeated_denial if policy is not None else ""
        context = policy.context_json if policy is not None else ""
        evaluation = policy.eval_json if policy is not None else ""
        workflow = self.workflows_for(state.tenant_id, state.workflow, state.workflow_version) \
            if policy is not None and state.workflow else ""  # fmt: skip
        decided = decide(state, specs, version.config, versions, denial_action(denials), pins, context,
                         rules=version.tool_rules, version=version.name, eval_defaults=evaluation,
                         workflow_json=workflow)  # fmt: skip
        return self._unseen(finish(state, decided))  # a child's end also answers its parent

    def _unseen(self, decided: list[RunEvent]) -> list[RunEvent]:
        fresh = []
        for event in decided:
            if event.event_id in self._in_flight:
                continue
            self._in_flight[event.event_id] = None
            fresh.append(event)
        while len(self._in_flight) > 100_000:
            self._in_flight.popitem(last=False)
        return fresh

    def _save(self, store: PartitionStore, state: RunState, *, new: bool) -> None:
        if state.terminal:
            # An ended run keeps only its marker (so re-sent requests are recognised); its history
            # lives in the journal, not in processor state.
            store.delete(run_key(state.run_id))
            store.delete(active_key(state.run_id))
            self._ended.mark(store, state.run_id)
        else:
            store.put(run_key(state.run_id), state)
            if new:  # written once: every write is also a changelog record
                store.put(active_key(state.run_id), 1)
