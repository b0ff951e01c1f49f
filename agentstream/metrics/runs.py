"""What the journal says about runs, counted where it is written: the shell hands every event a
hosted core emits to `RunMetrics.observe` after the broker acknowledged it. Each event has one
writer, so each is counted once across a deployment, in the process of the core that wrote it:
model calls in the invoker's, tool calls in the executor's, costs and refusals in the cost
governor's, steps in the orchestrator's. No core changes for it, and an event type no metric
reads costs one dict lookup.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from agentstream.events import (
    BudgetExceeded,
    BudgetSettled,
    LlmCallCompleted,
    LlmCallFailed,
    LlmCallRequested,
    RunCancelled,
    RunCompleted,
    RunEvent,
    RunFailed,
    RunHalted,
    ToolCallCompleted,
)
from agentstream.metrics.labels import Series

# Seconds: a tool or a scripted model answers in milliseconds, a frontier model in tens of seconds.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# A run that never ends in this process (its partition moved) must not hold its step start forever.
MAX_OPEN_STEPS = 100_000
_ENDS = {RunCompleted: "completed", RunFailed: "failed", RunCancelled: "cancelled", RunHalted: "halted"}


class RunMetrics:
    def __init__(self, registry: CollectorRegistry, label_values: int = 200) -> None:
        def counter(name: str, help_text: str, labels: list[str]) -> Series:
            return Series(Counter(name, help_text, labels, registry=registry), label_values)

        def histogram(name: str, help_text: str, labels: list[str]) -> Series:
            return Series(Histogram(name, help_text, labels, buckets=DURATION_BUCKETS, registry=registry), label_values)

        self.step_seconds = Histogram(
            "agentstream_step_duration_seconds",
            "Wall time of a run's step: from its model call's request to the next step's, or to the run's end",
            buckets=DURATION_BUCKETS, registry=registry,
        )  # fmt: skip
        self.runs_ended = counter("agentstream_runs_ended_total", "Runs that ended or halted, by outcome", ["outcome"])
        self.model_seconds = histogram("agentstream_model_call_duration_seconds",
                                       "Latency of completed model calls, retries included", ["provider", "model"])  # fmt: skip
        self.model_errors = counter("agentstream_model_call_errors_total",
                                    "Failed model call attempts (final: no attempt left)",
                                    ["provider", "error_type", "final"])  # fmt: skip
        self.tokens = counter("agentstream_model_tokens_total", "Tokens of completed model calls, by type",
                              ["model", "type"])  # fmt: skip
        self.tool_seconds = histogram("agentstream_tool_call_duration_seconds",
                                      "Duration of tool calls, failed ones included", ["tool"])  # fmt: skip
        self.tool_errors = counter(
            "agentstream_tool_call_errors_total", "Tool calls whose result is an error", ["tool"]
        )
        self.cost = counter("agentstream_cost_usd_total", "Settled cost of model and tool calls, in US dollars",
                            ["kind", "model"])  # fmt: skip
        self.refusals = counter("agentstream_budget_refusals_total", "Calls the cost governor refused, by limit",
                                ["limit"])  # fmt: skip
        self._step_started: dict[str, float] = {}
        self._by_type: dict[type[Any], Callable[[Any], None]] = {
            LlmCallRequested: self._requested, LlmCallCompleted: self._completed, LlmCallFailed: self._failed,
            ToolCallCompleted: self._tool, BudgetSettled: self._settled, BudgetExceeded: self._refused,
            **dict.fromkeys(_ENDS, self._ended),
        }  # fmt: skip

    def observe(self, event: RunEvent) -> None:
        if (count := self._by_type.get(type(event))) is not None:
            count(event)

    def _requested(self, event: LlmCallRequested) -> None:
        if event.purpose != "step":
            return  # a compaction's call is part of the step that asked for it
        now = time.monotonic()
        started = self._step_started.pop(event.run_id, None)
        if started is not None:
            self.step_seconds.observe(now - started)
        elif len(self._step_started) >= MAX_OPEN_STEPS:
            self._step_started.clear()
        self._step_started[event.run_id] = now

    def _ended(self, event: RunEvent) -> None:
        started = self._step_started.pop(event.run_id, None)
        if started is not None:
            self.step_seconds.observe(time.monotonic() - started)
        self.runs_ended(_ENDS[type(event)]).inc()

    def _completed(self, event: LlmCallCompleted) -> None:
        self.model_seconds(event.provider, event.model).observe(event.latency_ms / 1000)
        tokens, model = self.tokens, event.model
        tokens(model, "input").inc(event.input_tokens)
        if event.cached_input_tokens:
            tokens(model, "cached_input").inc(event.cached_input_tokens)
        tokens(model, "output").inc(event.output_tokens)

    def _failed(self, event: LlmCallFailed) -> None:
        self.model_errors(event.provider, event.error_type, "true" if event.final else "false").inc()

    def _tool(self, event: ToolCallCompleted) -> None:
        self.tool_seconds(event.tool).observe(event.duration_ms / 1000)
        if event.is_error:
            self.tool_errors(event.tool).inc()

    def _settled(self, event: BudgetSettled) -> None:
        if event.cost_usd > 0:
            self.cost(event.kind, event.model).inc(event.cost_usd)

    def _refused(self, event: BudgetExceeded) -> None:
        self.refusals(event.limit).inc()
