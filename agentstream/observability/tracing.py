"""OpenTelemetry traces of runs: one run is one trace, across every process it passes through.

The trace id is a function of the run id (`run_trace_id`), and so is the id of the run's root span
(`invoke_agent`, `run_span_id`). Any process can therefore place a span in its run's trace without
having seen anything of the run before: after a restart, a replay, a rebalance, or for an event
written by a tool that sets no header. Trace context still travels in every journal record's
W3C `traceparent` header: it names the span that wrote the event, which becomes the parent of the
span of whoever processes it, so the trace is the run's causal tree across processes. A header
whose trace id is not its run's is ignored (the root span is the parent instead): no writer can
graft a run onto another trace.

What the shell (agentstream/kafka/runtime.py) calls, only while `TRACING.enabled`:
  * `parent_of(msg, event)`: the context in a fetched record's header;
  * `step(core, event, parent, start_ns, outcome)`: a span for a core's handling of an event, made
    only when the core emitted events (replays, no-ops and a call's mere start make none);
  * `call_context(ctx)`: a call (a work item) runs in it with that span as its origin, so the `chat`
    and `execute_tool` spans (agentstream/observability/genai.py) are its children;
  * `origin(event)`: the call span that produced a call's result event;
  * `journaling(records, pending)`: sets `traceparent` on each record, and makes the run's root
    span when its terminal event is journaled (its start is when this process first saw the run).

Off (no endpoint configured), nothing here is called and no exporting thread exists.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import logging
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from confluent_kafka import Message

from agentstream.events import Event, RunEvent
from agentstream.kafka.core import Outcome
from agentstream.kafka.journal import Record, header_pairs
from agentstream.observability.batching import SpanBatcher
from agentstream.observability.otlp import INTERNAL, Attributes, FinishedSpan, SpanRef, SpanSink
from agentstream.observability.sinks import sink_for
from agentstream.settings import TracingSettings, load

log = logging.getLogger("agentstream.tracing")

TRACEPARENT = "traceparent"
# The events that end a run for good (a halt may be resumed: its run's span stays open).
TERMINAL = {"RunCompleted": "completed", "RunFailed": "failed", "RunCancelled": "cancelled"}
# A reservation and a settlement record what a decision that has a span already decided (four
# per step): spans for them would double a step's spans and say nothing. A refusal is a span.
BOOKKEEPING = frozenset({"BudgetReserved", "BudgetSettled"})
_ALL = 1 << 64
_LOW64 = _ALL - 1
_MAX_RUNS = 20_000  # runs remembered for their root span; the oldest is forgotten past this
_MAX_ORIGINS = 10_000  # call results not yet journaled (a bound, never reached in practice)

# The span a running call descends from: set in the call's own task's context (`call_context`).
_ORIGIN: contextvars.ContextVar[SpanRef | None] = contextvars.ContextVar("agentstream_trace_origin", default=None)


def _digest(kind: bytes, run_id: str, size: int) -> int:
    value = int.from_bytes(hashlib.blake2b(kind + run_id.encode(), digest_size=size).digest(), "big")
    return value or 1  # zero is the invalid id


def run_trace_id(run_id: str) -> int:
    return _digest(b"trace\x00", run_id, 16)


def run_span_id(run_id: str) -> int:
    return _digest(b"invoke_agent\x00", run_id, 8)


@functools.lru_cache(maxsize=8192)  # asked for every record a process writes without a step span
def root_context(run_id: str) -> SpanRef:
    return SpanRef(run_trace_id(run_id), run_span_id(run_id))


def _child_of(parent: SpanRef) -> SpanRef:
    return SpanRef(parent.trace_id, random.getrandbits(64) or 1)


def traceparent(ctx: SpanRef) -> bytes:
    return b"00-%032x-%016x-01" % ctx  # every span is sampled: the run is traced whole or not at all


def parse_traceparent(value: bytes, run_id: str) -> SpanRef | None:
    """The context a `traceparent` names, when it is well formed and in `run_id`'s trace."""
    parts = value.split(b"-")
    if len(parts) != 4 or parts[0] != b"00" or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) != 2:
        return None
    try:
        trace_id, span_id = int(parts[1], 16), int(parts[2], 16)
        int(parts[3], 16)  # well-formed flags; every span here is sampled whatever they say
    except ValueError:
        return None
    if trace_id != root_context(run_id).trace_id or span_id == 0:
        return None
    return SpanRef(trace_id, span_id)


@dataclass(slots=True)
class _Run:
    """What the root span says of a run, gathered from the events this process handled."""

    start_ns: int
    agent: str = ""
    model: str = ""
    parent_run_id: str = ""
    provider: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    counted: str = ""  # the last answer counted: every hosted core that accepts it is handed the same event


class _Pending(Protocol):
    @property
    def event(self) -> RunEvent: ...
    @property
    def trace(self) -> SpanRef | None: ...


def agent_name(workflow: str, labels: dict[str, str]) -> str:
    # A graph run is its workflow; a ReAct run names itself with an `agent` label, or is the platform's agent.
    return workflow or labels.get("agent", "") or "agentstream"


class Tracing:
    """The process's tracer. One instance (`TRACING`): the shell, the journal client and the call
    spans all reach it without threading it through every constructor."""

    def __init__(self) -> None:
        self.enabled = False
        self.content = False
        self.content_bytes = 8192
        self._out: SpanBatcher | None = None
        self._bound = _ALL  # a run is traced when its trace id's low 64 bits are below this
        self._runs: dict[str, _Run] = {}
        self._origins: dict[str, SpanRef] = {}

    def configure(self, service: str, settings: TracingSettings, *, sink: SpanSink | None = None,
                  instance: str = "") -> bool:  # fmt: skip
        """Turns tracing on for this process when an endpoint is set (or a sink is given)."""
        if sink is None and settings.endpoint is None:
            return False
        self.shutdown()
        sink = sink or sink_for(service, instance)
        self._out = SpanBatcher(sink, queue=settings.queue_spans, batch=settings.export_batch,
                                delay_s=settings.schedule_delay_ms / 1000)  # fmt: skip
        self.content, self.content_bytes = settings.content, settings.content_bytes
        self._bound = sample_bound(settings)
        self.enabled = True
        log.info("tracing on: %s spans exported to %s, %.4g of runs traced%s", service,
                 "a collector" if settings.endpoint else "the given sink", self._bound / _ALL,
                 " (with prompt and tool content)" if self.content else "")  # fmt: skip
        return True

    def shutdown(self, timeout_s: float = 3.0) -> None:
        """Exports what is buffered, then stops (a process's last spans are not lost at exit), waiting
        at most `timeout_s`: a collector that does not answer must not hold up a process's stop."""
        if self._out is not None:
            self._out.shutdown(timeout_s)
        self.enabled, self._out, self._bound = False, None, _ALL
        self._runs.clear()
        self._origins.clear()

    def sampled(self, run_id: str) -> bool:
        """Whether `run_id` is traced: a function of its trace id alone, so every process decides
        alike with nothing shared, and a run is traced whole or not at all (OpenTelemetry's
        TraceIdRatioBased rule, which a collector's own sampler applies the same way)."""
        bound = self._bound
        return bound >= _ALL or (bound > 0 and root_context(run_id).trace_id & _LOW64 < bound)

    # -- the shell's hooks ------------------------------------------------------------------------

    def parent_of(self, msg: Message, event: Event) -> SpanRef | None:
        if not isinstance(event, RunEvent) or not self.sampled(event.run_id):
            return None
        if event.type_name == "RunRequested" and event.run_id not in self._runs:
            _kind, ts_ms = msg.timestamp()
            self._remember(event.run_id, ts_ms * 1_000_000 if ts_ms > 0 else time.time_ns())
        for key, value in header_pairs(msg):
            if key == TRACEPARENT:
                return parse_traceparent(value, event.run_id)
        return None

    def step(self, core: str, event: Event, parent: SpanRef | None, start_ns: int, outcome: Outcome) -> SpanRef | None:  # fmt: skip
        if not isinstance(event, RunEvent) or not self.sampled(event.run_id):
            return None
        self._note(event, start_ns)
        emit = outcome.emit
        if not emit or (emit[0].type_name in BOOKKEEPING and all(e.type_name in BOOKKEEPING for e in emit)):
            # Nothing emitted (a call started, or only state recorded), or only a budget's
            # bookkeeping: no span of its own. What it emits, and a call it starts, descend from
            # the span of the event it was handed.
            return parent
        attributes: dict[str, str | int] = {
            "gen_ai.conversation.id": event.run_id,
            "agentstream.processor": core,
            "agentstream.event.type": event.type_name,
            "agentstream.event.id": event.event_id,
        }
        step = getattr(event, "step", None)
        if isinstance(step, int):
            attributes["agentstream.step"] = step
        parent = parent or root_context(event.run_id)
        ctx = _child_of(parent)
        if self._out is not None:
            self._out.add(FinishedSpan.of(f"{core} {event.type_name}", ctx, parent, INTERNAL, attributes, start_ns,
                                       time.time_ns()))  # fmt: skip
        return ctx

    def call_context(self, ctx: SpanRef) -> contextvars.Context:
        """The context a call's task runs in, naming `ctx` as the origin of its call span."""
        context = contextvars.copy_context()
        context.run(_ORIGIN.set, ctx)
        return context

    def origin(self, event: RunEvent) -> SpanRef | None:
        return self._origins.pop(event.event_id, None)

    def journaling(self, records: Sequence[Record], pending: Iterable[_Pending]) -> None:
        for record, item in zip(records, pending, strict=False):
            event = item.event
            if not self.sampled(event.run_id):
                continue  # no header: a run not traced costs no bytes
            record.headers.append((TRACEPARENT, traceparent(item.trace or root_context(event.run_id))))
            if event.type_name in TERMINAL:
                self._end_run(event)

    # -- spans of calls (agentstream/observability/genai.py) --------------------------------------

    def call_parent(self, run_id: str) -> SpanRef:
        return _ORIGIN.get() or root_context(run_id)

    def call_span(
        self, name: str, kind: int, run_id: str, start_ns: int, attributes: Attributes,
        error: str | None, results: Iterable[RunEvent],
    ) -> SpanRef:  # fmt: skip
        """A finished call's span, child of its origin; the call's result events descend from it."""
        parent = self.call_parent(run_id)
        ctx = _child_of(parent)
        if self._out is not None:
            self._out.add(FinishedSpan.of(name, ctx, parent, kind, attributes, start_ns, time.time_ns(), error))
        if len(self._origins) >= _MAX_ORIGINS:
            self._origins.clear()
        for event in results:
            self._origins[event.event_id] = ctx
        return ctx

    def headers_for(self, event: RunEvent) -> list[tuple[str, bytes]]:
        """A client's write (a run request, a cancel, a decision): its parent is the run's root span."""
        if not self.enabled or not self.sampled(event.run_id):
            return []
        return [(TRACEPARENT, traceparent(root_context(event.run_id)))]

    # -- the run's root span ------------------------------------------------------------------------

    def _remember(self, run_id: str, start_ns: int) -> _Run:
        if len(self._runs) >= _MAX_RUNS:
            self._runs.pop(next(iter(self._runs)))
        run = self._runs[run_id] = _Run(start_ns)
        return run

    def _note(self, event: RunEvent, start_ns: int) -> None:
        run = self._runs.get(event.run_id) or self._remember(event.run_id, start_ns)
        name = event.type_name
        if name == "RunRequested":
            run.agent = agent_name(getattr(event, "workflow", ""), getattr(event, "labels", {}))
            run.model, run.parent_run_id = getattr(event, "model", ""), getattr(event, "parent_run_id", "")
        elif name == "LlmCallCompleted" and run.counted != event.event_id:
            run.counted = event.event_id
            run.provider = getattr(event, "provider", "") or run.provider
            run.input_tokens += getattr(event, "input_tokens", 0)
            run.output_tokens += getattr(event, "output_tokens", 0)

    def _end_run(self, event: RunEvent) -> None:
        run = self._runs.pop(event.run_id, None) or _Run(time.time_ns())
        attributes: dict[str, str | int] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": run.agent or "agentstream",
            "gen_ai.conversation.id": event.run_id,
            "agentstream.tenant.id": event.tenant_id,
            "agentstream.run.status": TERMINAL[event.type_name],
            "gen_ai.usage.input_tokens": run.input_tokens,
            "gen_ai.usage.output_tokens": run.output_tokens,
        }
        if run.model:
            attributes["gen_ai.request.model"] = run.model
        if run.provider:
            attributes["gen_ai.provider.name"] = run.provider
        # A subagent's run is its own trace, linked to the run that spawned it.
        links = (root_context(run.parent_run_id),) if run.parent_run_id else ()
        error = str(getattr(event, "error_type", "") or "failed") if event.type_name == "RunFailed" else None
        end_ns = time.time_ns()
        if self._out is not None:
            self._out.add(FinishedSpan.of(f"invoke_agent {attributes['gen_ai.agent.name']}", root_context(event.run_id),
                                       None, INTERNAL, attributes, min(run.start_ns, end_ns), end_ns, error, links))  # fmt: skip


def sample_bound(settings: TracingSettings) -> int:
    """OTEL_TRACES_SAMPLER as a bound on a trace id's low 64 bits. A run is its trace's root, so the
    parent-based samplers decide as their root sampler does."""
    name = settings.sampler.removeprefix("parentbased_")
    if name == "always_on":
        return _ALL
    if name == "always_off":
        return 0
    return round(settings.sampler_arg * _ALL)


TRACING = Tracing()


def start_tracing(service: str, instance: str = "") -> bool:
    """This process's tracing, as the settings say (on only with an OTLP endpoint)."""
    return TRACING.configure(service, load(TracingSettings), instance=instance)
