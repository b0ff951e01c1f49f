"""Shadow replay, the pure part: re-drive one recorded run through a candidate orchestrator
version with every model output, tool result and human input pinned to what the journal holds,
and say whether the candidate decides the same trajectory or where it first diverges.

Nothing here calls a model or a tool: a request of the candidate's that the journal cannot answer
(a call it never recorded) is itself the divergence. Bad input (a record no schema here can
decode, a journal whose beginning was deleted, a candidate that raises) is reported for the run
and never stops a batch. Step-check verdicts (EvalVerdict) are assessments of a trajectory, not
part of it: they are compared apart, as check failures the candidate adds or no longer has.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Literal

from agentstream.events import RunEvent, RunStarted
from agentstream.llm import tools_from_json
from agentstream.processors.orchestrator.core import HANDLED
from agentstream.processors.orchestrator.decide import decide
from agentstream.processors.orchestrator.evolve import evolve
from agentstream.processors.orchestrator.loops import denial_action
from agentstream.processors.orchestrator.state import RunState
from agentstream.processors.orchestrator.subagents import finish
from agentstream.processors.orchestrator.versions import OrchestratorVersion

# What the orchestrator writes: the trajectory the candidate must reproduce.
AUTHORED = frozenset(
    {"RunStarted", "LlmCallRequested", "ToolCallRequested", "RunHalted", "RunCompleted", "RunFailed", "RunCancelled",
     "ContextCompacted", "LoopDetected", "RunFlagged"}
)  # fmt: skip
REQUESTS = frozenset({"LlmCallRequested", "ToolCallRequested"})  # what only a live call could answer
TERMINAL = frozenset({"RunCompleted", "RunFailed", "RunCancelled"})
VERDICT = "EvalVerdict"  # the step checks' event (by name: it may not exist in this version)

Kind = Literal["differs", "not_decided", "unanswerable", "extra", "candidate_error", "undecodable", "truncated"]
Status = Literal["identical", "diverged", "unreplayable"]
BAD_INPUT = frozenset({"candidate_error", "undecodable", "truncated"})


@dataclass(frozen=True)
class Divergence:
    kind: Kind
    step: int
    event: str  # the event type where it happened (the recorded one, or the candidate's)
    event_id: str
    detail: str
    recorded_tool: str = ""  # set when the divergence is a tool choice: what the recording called
    candidate_tool: str = ""  # ... and what the candidate asked for ("" for none)

    @property
    def tool_choice(self) -> bool:
        return self.event == "ToolCallRequested"

    def describe(self) -> str:
        return f"{self.kind} at step {self.step}, {self.event} {self.event_id}: {self.detail}"


@dataclass
class RunReport:
    run_id: str
    tenant_id: str = ""
    events: int = 0
    decisions_matched: int = 0
    divergence: Divergence | None = None
    tools_used: list[str] = field(default_factory=list)  # the tools the recording called, sorted
    new_check_failures: list[str] = field(default_factory=list)  # "check@step" the candidate adds
    gone_check_failures: list[str] = field(default_factory=list)  # ... and those it no longer has

    @property
    def status(self) -> Status:
        if self.divergence is None:
            return "identical"
        return "unreplayable" if self.divergence.kind in BAD_INPUT else "diverged"

    @property
    def tool_choice_changed(self) -> bool:
        return self.status == "diverged" and self.divergence is not None and self.divergence.tool_choice


def diff_fields(recorded: RunEvent, decided: RunEvent) -> str:
    parts = []
    for f in fields(recorded):
        a, b = getattr(recorded, f.name), getattr(decided, f.name, None)
        if a != b:
            parts.append(f"{f.name}: recorded {str(a)[:120]!r} vs candidate {str(b)[:120]!r}")
    return "; ".join(parts) or f"recorded {recorded.type_name} vs candidate {decided.type_name}"


def _tool(event: RunEvent | None) -> str:
    return str(getattr(event, "tool", "")) if event is not None and event.type_name == "ToolCallRequested" else ""


def _verdict_key(event: RunEvent) -> str:
    return f"{getattr(event, 'check_name', '?')}@{getattr(event, 'step', '?')}"


class _Replay:
    """One run's replay: its recorded events by id, the candidate's state and what it decided."""

    def __init__(self, events: Sequence[RunEvent], candidate: OrchestratorVersion, report: RunReport) -> None:
        self.events, self.candidate, self.report = events, candidate, report
        self.recorded = {e.event_id: e for e in events}
        self.ended = any(e.type_name in TERMINAL for e in events)
        self.decided: set[str] = set()
        self.verdicts_decided: dict[str, RunEvent] = {}
        started = next((e for e in events if isinstance(e, RunStarted)), None)
        # The run's pinned inputs of its start, as the orchestrator had them then: the tools, their
        # versions and exact pins, the tenant's denial and evaluation policies, the context settings.
        self.catalog = {t.name: t for t in tools_from_json(started.tools_json)} if started else {}
        self.versions = dict(started.tool_versions) if started else {}
        self.pins = dict(started.tool_pins) if started else {}
        self.denials = denial_action(started.on_repeated_denial) if started else denial_action("")
        self.context = started.context_json if started else ""
        self.evaluation = str(getattr(started, "eval_json", "")) if started else ""  # the checks' policy
        self.workflow = started.workflow_json if started else ""  # a graph run's pinned definition

    def run(self) -> Divergence | None:
        state: RunState | None = None
        # The last event the orchestrator acts on: in a recording of a run not ended yet, what the
        # candidate decides after it is the run's next move, not yet journaled.
        last = max(
            (i for i, e in enumerate(self.events) if e.type_name in HANDLED and e.type_name != VERDICT), default=-1
        )
        for index, event in enumerate(self.events):
            step = int(getattr(event, "step", 0) or (state.step if state else 0))
            if event.type_name == VERDICT:
                continue  # an assessment of the trajectory, compared apart
            if event.type_name in AUTHORED:
                if event.event_id not in self.decided:
                    what = "the candidate did not decide it (it decided something else, or nothing, before it)"
                    return Divergence("not_decided", step, event.type_name, event.event_id, what, _tool(event))
                self.report.decisions_matched += 1
            if event.type_name not in HANDLED or (state is not None and state.terminal):
                continue
            try:
                state = evolve(event, state)
                decisions = [] if state is None else self._decide(state)
            except Exception as exc:  # the candidate is an operator's code: any failure is this run's
                what = f"the candidate raised {type(exc).__name__}: {exc}"
                return Divergence("candidate_error", step, event.type_name, event.event_id, what[:500])
            for decision in decisions:
                found = self._check(decision, in_progress=index >= last and not self.ended)
                if found is not None:
                    return found
        return None

    def _decide(self, state: RunState) -> list[RunEvent]:
        c = self.candidate
        decided = decide(state, self.catalog, c.config, self.versions, self.denials, self.pins, self.context,
                         rules=c.tool_rules, version=c.name, eval_defaults=self.evaluation,
                         workflow_json=self.workflow)  # fmt: skip
        return finish(state, decided)  # as the orchestrator core does: a subagent's halt is its end

    def _check(self, decision: RunEvent, *, in_progress: bool) -> Divergence | None:
        step = int(getattr(decision, "step", 0) or 0)
        if decision.type_name == VERDICT:
            self.verdicts_decided[decision.event_id] = decision
            return None
        if decision.run_id != self.report.run_id:
            return None  # another run's (a child's request or cancel, a parent's result): in its journal
        recorded = self.recorded.get(decision.event_id)
        if recorded is None:
            if in_progress:
                return None  # the recording ends before its run did: this is the run's next move
            if decision.type_name in REQUESTS:
                what = "the candidate asks for a call the journal has no answer for (not made: shadow replays only)"
                return Divergence(
                    "unanswerable", step, decision.type_name, decision.event_id, what, "", _tool(decision)
                )
            what = "the candidate decided an event the recording does not have"
            return Divergence("extra", step, decision.type_name, decision.event_id, what, "", _tool(decision))
        if isinstance(recorded, RunStarted) and isinstance(decision, RunStarted):
            decision = replace(decision, orchestrator_version=recorded.orchestrator_version)  # who, not what
        if decision != recorded:
            what = diff_fields(recorded, decision)
            return Divergence("differs", step, decision.type_name, decision.event_id, what, _tool(recorded),
                              _tool(decision))  # fmt: skip
        self.decided.add(decision.event_id)
        return None

    def compare_verdicts(self, upto: int | None) -> None:
        """Check failures up to the divergence (after it the runs are not comparable)."""
        recorded = {e.event_id: e for e in self.events if e.type_name == VERDICT}

        def within(e: RunEvent) -> bool:
            return upto is None or int(getattr(e, "step", 0) or 0) < upto

        self.report.new_check_failures = sorted(
            _verdict_key(e) for i, e in self.verdicts_decided.items() if i not in recorded and within(e)
        )
        self.report.gone_check_failures = sorted(
            _verdict_key(e) for i, e in recorded.items() if i not in self.verdicts_decided and within(e)
        )


def shadow_run(
    run_id: str, events: Sequence[RunEvent], candidate: OrchestratorVersion, undecodable: Sequence[str] = ()
) -> RunReport:
    """One recorded run against `candidate`. `undecodable`: why each of the run's records that
    could not be decoded was refused (a schema newer than this code, or corrupt bytes)."""
    report = RunReport(run_id, events=len(events) + len(undecodable))
    report.tenant_id = events[0].tenant_id if events else ""
    report.tools_used = sorted({_tool(e) for e in events} - {""})
    if undecodable:
        what = f"{len(undecodable)} record(s) could not be decoded, first: {undecodable[0]}"
        report.divergence = Divergence("undecodable", 0, "?", "", what[:500])
        return report
    if not events or events[0].type_name != "RunRequested":
        first = events[0] if events else None
        what = (f"the journal starts at {first.type_name} {first.event_id}, not RunRequested: its beginning was "
                "deleted (retention), so the run cannot be re-driven") if first else "no events"  # fmt: skip
        report.divergence = Divergence("truncated", 0, first.type_name if first else "?", "", what)
        return report
    replay = _Replay(events, candidate, report)
    report.divergence = replay.run()
    if report.divergence is None or report.divergence.kind not in BAD_INPUT:
        replay.compare_verdicts(report.divergence.step if report.divergence else None)
    return report
