"""Deterministic replay: re-drive the current orchestrator over a recorded journal, with every
model output, tool result and human input pinned to what was recorded, and diff its decisions
against the recorded ones. Any difference means the orchestrator is not the one that produced the
run (a changed prompt, step cap or code path), which is what a shadow test must catch."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from agentstream.config import Settings
from agentstream.events import RunEvent, RunStarted
from agentstream.llm import tools_from_json
from agentstream.processors.orchestrator.decide import OrchestratorConfig, decide
from agentstream.processors.orchestrator.evolve import evolve
from agentstream.processors.orchestrator.state import RunState

AUTHORED = frozenset(
    {
        "RunStarted",
        "LlmCallRequested",
        "ToolCallRequested",
        "RunHalted",
        "RunCompleted",
        "RunFailed",
        "RunCancelled",
        "ContextCompacted",
    }
)


@dataclass
class ReplayResult:
    run_id: str
    events: int = 0
    decisions_matched: int = 0
    divergences: list[str] = field(default_factory=list)

    @property
    def deterministic(self) -> bool:
        return not self.divergences


def _diff(recorded: RunEvent, decided: RunEvent) -> str:
    parts = []
    for f in fields(recorded):
        a, b = getattr(recorded, f.name), getattr(decided, f.name)
        if a != b:
            parts.append(f"{f.name}: recorded {str(a)[:120]!r} vs replayed {str(b)[:120]!r}")
    return "; ".join(parts)


def replay_events(events: list[RunEvent], config: OrchestratorConfig | None = None) -> ReplayResult:
    config = config or OrchestratorConfig()
    run_id = events[0].run_id if events else ""
    result = ReplayResult(run_id)
    started = next((e for e in events if isinstance(e, RunStarted)), None)
    catalog = {t.name: t for t in tools_from_json(started.tools_json)} if started else {}
    versions = dict(started.tool_versions) if started else {}
    pins = dict(started.tool_pins) if started else {}  # what the run pinned, as the orchestrator had it
    # The context settings it pinned: the run's own over the tenant's defaults of that day.
    context = started.context_json if started else ""
    state: RunState | None = None
    pending: dict[str, RunEvent] = {}
    recorded_ids: set[str] = set()
    for event in events:
        result.events += 1
        recorded_ids.add(event.event_id)
        if event.type_name in AUTHORED:
            decided = pending.pop(event.event_id, None)
            if decided is None:
                result.divergences.append(
                    f"recorded {event.type_name} {event.event_id} was not decided by this orchestrator"
                )
            elif decided != event:
                result.divergences.append(f"{event.type_name} {event.event_id} differs: {_diff(event, decided)}")
            else:
                result.decisions_matched += 1
        if state is not None and state.terminal:
            continue
        state = evolve(event, state)
        if state is not None:
            for decision in decide(state, catalog, config, versions, pins=pins, context_defaults=context):
                if decision.event_id not in recorded_ids:
                    pending[decision.event_id] = decision
    ended = state is not None and state.terminal
    for decision in pending.values():
        if ended or decision.type_name in ("RunCompleted", "RunFailed", "RunCancelled"):
            result.divergences.append(
                f"replay decided {decision.type_name} {decision.event_id}, which the recording does not have"
            )
    return result


async def replay_command(settings: Settings, run_id: str) -> int:
    from agentstream.client.journal import read_run_once

    entries = await read_run_once(settings, run_id)
    if not entries:
        print(f"no run {run_id} in the journal")
        return 1
    result = replay_events([e.event for e in entries])
    print(f"replayed {result.events} events of {run_id}: {result.decisions_matched} decisions matched, "
          f"{len(result.divergences)} divergences")  # fmt: skip
    for d in result.divergences:
        print(f"  DIVERGED {d}")
    print("trajectory identical" if result.deterministic else "trajectory differs")
    return 0 if result.deterministic else 1
