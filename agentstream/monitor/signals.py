"""Journal events into metric samples: the pure half of the monitor.

Every sample is stamped with the journal's append time of the event that completed it, so a
monitor replaying the same stretch of journal computes the same windows and raises the same
alerts. What a run contributes is kept only while it can still produce a sample."""

from __future__ import annotations

from dataclasses import dataclass, field

from agentstream.events import (
    TERMINAL_TYPES,
    BudgetReserved,
    BudgetSettled,
    EvalVerdict,
    JudgeVerdict,
    LlmCallRequested,
    LoopDetected,
    RunEvent,
    RunStarted,
    ToolCallAuthorized,
    ToolCallCompleted,
)

_KEPT_RUNS = 200_000  # runs tracked at once at most: the oldest are dropped past it


@dataclass(frozen=True, slots=True)
class Sample:
    metric: str
    tenant: str
    tool: str
    version: str
    ts_ms: int
    value: float


@dataclass
class _Run:
    tenant: str
    version: str = ""
    looped: bool = False
    ended: bool = False
    cost_usd: float = 0.0
    open_calls: set[str] = field(default_factory=set)  # reserved, not yet settled
    step_ms: int = -1  # when the current step's model call was requested
    authorized: set[str] = field(default_factory=set)
    failed_checks: set[tuple[str, int]] = field(default_factory=set)  # (check, step) already counted
    seen: set[str] = field(default_factory=set)


class Signals:
    def __init__(self) -> None:
        self._runs: dict[str, _Run] = {}
        # Runs done with (and the version each ran on), so a late duplicate of one of their events
        # does not start tracking anew, and a judge's grade, which comes after the end, is rated.
        self._done: dict[str, str] = {}
        self._graded: dict[str, None] = {}  # judge verdicts rated: a re-written one counts once

    def feed(self, event: RunEvent, ts_ms: int) -> list[Sample]:
        if isinstance(event, JudgeVerdict):
            return self._judged(event, ts_ms)
        run = self._runs.get(event.run_id)
        if run is None and event.run_id in self._done:
            return []
        if run is None:
            if event.type_name in TERMINAL_TYPES:
                return []  # the end of a run begun before this monitor's window: nothing to rate
            run = self._track(event)
        if event.event_id in run.seen:
            return []  # a re-emitted event is the same event
        run.seen.add(event.event_id)
        out: list[Sample] = []

        def sample(metric: str, value: float, tool: str = "") -> None:
            out.append(Sample(metric, run.tenant, tool, run.version, ts_ms, value))

        match event:
            case RunStarted():
                run.version = event.orchestrator_version
            case LlmCallRequested() if event.purpose == "step":
                if run.step_ms >= 0:
                    sample("step_latency_p95_ms", float(ts_ms - run.step_ms))
                run.step_ms = ts_ms
            case ToolCallAuthorized():
                run.authorized.add(event.call_id)
            case ToolCallCompleted() if event.call_id in run.authorized:
                sample("tool_error_rate", 1.0 if event.is_error else 0.0, event.tool)
                failed = {check for check, step in run.failed_checks if step == event.step}
                sample("ungrounded_rate", 1.0 if "grounding" in failed else 0.0, event.tool)
                sample("intent_mismatch_rate", 1.0 if "intent" in failed else 0.0, event.tool)
                sample("check_failure_rate", 1.0 if failed else 0.0, event.tool)
            case LoopDetected():
                run.looped = True
            case BudgetReserved():
                run.open_calls.add(event.call_id)
            case BudgetSettled():
                run.open_calls.discard(event.call_id)
                if event.kind != "subagent":  # a child's spend: the child's own run counts it
                    run.cost_usd += event.cost_usd
            case EvalVerdict():
                run.failed_checks.add((event.check_name, event.step))
        if event.type_name in TERMINAL_TYPES and not run.ended:
            run.ended = True
            if run.step_ms >= 0:
                sample("step_latency_p95_ms", float(ts_ms - run.step_ms))
            sample("loop_rate", 1.0 if run.looped else 0.0)
        if run.ended and not run.open_calls:
            # The last settlement often lands after the end: the cost is sampled once all are in.
            sample("cost_per_run_usd", run.cost_usd)
            del self._runs[event.run_id]
            self._done[event.run_id] = run.version
            if len(self._done) > _KEPT_RUNS:
                del self._done[next(iter(self._done))]
        return out

    def _judged(self, event: JudgeVerdict, ts_ms: int) -> list[Sample]:
        """A judge's grade: written on the run after its end, when the run is no longer tracked."""
        if event.event_id in self._graded:
            return []
        self._graded[event.event_id] = None
        if len(self._graded) > _KEPT_RUNS:
            del self._graded[next(iter(self._graded))]
        tracked = self._runs.get(event.run_id)
        version = tracked.version if tracked is not None else self._done.get(event.run_id, "")
        return [Sample("judge_failure_rate", event.tenant_id, "", version, ts_ms, 0.0 if event.passed else 1.0)]

    def _track(self, event: RunEvent) -> _Run:
        if len(self._runs) >= _KEPT_RUNS:
            del self._runs[next(iter(self._runs))]
        run = self._runs[event.run_id] = _Run(event.tenant_id)
        return run

    @property
    def tracked_runs(self) -> int:
        return len(self._runs)
