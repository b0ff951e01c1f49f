"""Traces (agentstream/observability): the processor shell's real code over the broker's twin, with
spans kept in an in-memory sink. Trace context rides in each journal record's
`traceparent` header from the event's writer to whoever processes it; a run is one trace whose id
and root span id are its run's; a model call is a `chat` span under the step that started it, and
its result's consumers descend from it. Then the GenAI attributes of chat and tool spans, with
content off (the default) and on (redacted)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from agentstream.events import (
    LlmCallCompleted,
    LlmCallFailed,
    LlmCallRequested,
    RunEvent,
    ToolCallAuthorized,
    ToolCallCompleted,
)
from agentstream.kafka.core import WorkItem
from agentstream.kafka.hosting import HostedCore
from agentstream.kafka.journal import RecordFactory, header_pairs
from agentstream.kafka.runtime import ProcessorRuntime
from agentstream.kafka.runtime_config import RuntimeConfig
from agentstream.observability.genai import chat_attributes, never_trace, redact, tool_attributes, traced_chat
from agentstream.observability.otlp import CLIENT, FinishedSpan, InMemorySpans
from agentstream.observability.tracing import (
    TRACEPARENT,
    TRACING,
    parse_traceparent,
    root_context,
    run_span_id,
    run_trace_id,
    traceparent,
)
from agentstream.settings import TracingSettings
from tests.kafka_twin import CrashPlan, crashing_stores
from tests.unit.test_commit_order import CHANGELOGS, CODEC, JOURNAL, PARTITIONS, RUNS, Finisher, Planner, World


@pytest.fixture
def spans() -> Iterator[InMemorySpans]:
    sink = InMemorySpans()
    assert TRACING.configure("test", TracingSettings(), sink=sink)
    try:
        yield sink
    finally:
        TRACING.shutdown()


class TracedPlanner(Planner):
    """The twin's planner, its model call made through the model invoker's span wrapper."""

    def _call(self, run: str) -> WorkItem:
        item = super()._call(run)
        request = self._ask(run)
        return WorkItem(item.key, lambda: traced_chat(request, item.run))


class TracedWorld(World):
    def runtime(self, plan: CrashPlan) -> ProcessorRuntime:
        self.broker.plan = plan
        records = RecordFactory(CODEC, JOURNAL, PARTITIONS)
        config = RuntimeConfig(bootstrap="twin", input_topic=JOURNAL, deadletter_topic="twin.dlq",
                               status_topic="twin.status", state_dir=self.state_dir, instance="0", batch_size=3,
                               changelogs=CHANGELOGS, changelog_interval_s=0.0)  # fmt: skip
        cores = [HostedCore(TracedPlanner(self.calls, plan), records), HostedCore(Finisher(), records)]
        return ProcessorRuntime(cores, self.broker.producer(), config, "shell", consumers=self.broker.consumer,
                                open_store=crashing_stores(plan))  # fmt: skip


def test_ids_are_the_runs_and_a_header_of_another_trace_is_ignored() -> None:
    assert run_trace_id("run_a") == run_trace_id("run_a") != run_trace_id("run_b")
    assert run_span_id("run_a") != run_span_id("run_b")
    root = root_context("run_a")
    assert parse_traceparent(traceparent(root), "run_a") == root
    header = traceparent(root)
    assert header.decode() == f"00-{run_trace_id('run_a'):032x}-{run_span_id('run_a'):016x}-01"
    # Another run's trace, or nonsense, is not a parent: the run's own root span is used instead.
    assert parse_traceparent(header, "run_b") is None
    for bad in (b"", b"00-xyz", b"01-" + header[3:], header[:-1], header.replace(b"-01", b"-zz")):
        assert parse_traceparent(bad, "run_a") is None


def test_tracing_is_off_without_an_endpoint() -> None:
    assert TRACING.configure("test", TracingSettings()) is False
    assert TRACING.enabled is False
    assert TRACING.headers_for(LlmCallRequested("e", "r", "t", 1, "c", "m", "[]", "[]", 8)) == []


async def test_one_run_is_one_connected_trace_carried_in_the_journal_headers(
    spans: InMemorySpans, tmp_path: Path
) -> None:
    world = TracedWorld(tmp_path)
    assert await world.live(CrashPlan()) is False
    TRACING.shutdown()  # flushes
    by_run: dict[int, list[FinishedSpan]] = {}
    for span in spans.spans:
        by_run.setdefault(span.context.trace_id, []).append(span)
    assert sorted(by_run) == sorted(run_trace_id(run) for run in RUNS), "not one trace per run"

    for run in RUNS:
        trace = {s.context.span_id: s for s in by_run[run_trace_id(run)]}
        names = Counter(s.name for s in trace.values())
        # The requests were journaled before the process started: read while it caught up (replay,
        # no span), then acted on by `resume`, whose output descends from the run's root span. The
        # planner's handling of its own LlmCallRequested only starts the call: no span of its own.
        assert names == Counter(["invoke_agent agentstream", "chat m", "finisher LlmCallCompleted"]), names
        root = trace[run_span_id(run)]
        assert root.name == "invoke_agent agentstream" and root.parent is None
        assert root.attributes["gen_ai.conversation.id"] == run
        assert root.attributes["gen_ai.operation.name"] == "invoke_agent"
        assert root.attributes["gen_ai.usage.input_tokens"] == 1
        # Connected: every other span's parent is in the run's trace, and the chain is causal.
        parent = {s.name: trace[s.parent.span_id].name for s in trace.values() if s.parent is not None}
        assert parent == {
            "chat m": "invoke_agent agentstream",  # a call started from resumed state: under the root
            "finisher LlmCallCompleted": "chat m",  # the call's result descends from its span
        }
        chat = next(s for s in trace.values() if s.name == "chat m")
        assert chat.attributes["gen_ai.usage.output_tokens"] == 1

    # Each record the shell journaled names, in its header, the span that wrote it.
    written = [m for m in world.broker.records(JOURNAL) if not (m.key() or b"").endswith(b"/req")]
    assert written
    for msg in written:
        run = (msg.key() or b"").decode().split("/")[0]
        header = dict(header_pairs(msg)).get(TRACEPARENT)
        assert header is not None, f"{msg.key()!r} has no traceparent"
        ctx = parse_traceparent(header, run)
        assert ctx is not None and ctx.span_id in {s.context.span_id for s in by_run[run_trace_id(run)]}


async def test_off_the_shell_writes_no_header(tmp_path: Path) -> None:
    assert TRACING.enabled is False
    world = TracedWorld(tmp_path)
    assert await world.live(CrashPlan()) is False
    assert all(TRACEPARENT not in dict(header_pairs(m)) for m in world.broker.records(JOURNAL))


REQUEST = LlmCallRequested(
    event_id="r/s0001/llm/requested", run_id="run_x", tenant_id="t", step=1, call_id="run_x/s0001/llm", model="gpt-x",
    messages_json='[{"role":"user","content":"pay ACME with api_key=sk-abcdefghijklmnopqrstuv"}]', tools_json="[]",
    max_tokens=256,
)  # fmt: skip
ANSWER = LlmCallCompleted(
    event_id="run_x/s0001/llm/completed", run_id="run_x", tenant_id="t", step=1, call_id="run_x/s0001/llm",
    provider="openai", model="gpt-x-2026", text="Paying now", tool_calls_json='[{"id":"call_1","name":"pay"}]',
    finish_reason="tool_calls", input_tokens=120, output_tokens=30, cached_input_tokens=64, latency_ms=5.0, attempts=1,
)  # fmt: skip
TOOL = ToolCallAuthorized(
    event_id="a", run_id="run_x", tenant_id="t", step=1, call_id="run_x/s0001/tool00", tool_call_id="call_1",
    tool="pay", tool_version="1", arguments_json='{"to":"ACME","password":"hunter2hunter2"}', idempotency_key="k",
    timeout_ms=1000, authorized_by="policy-gate", expires_ms=0, capability="CAPABILITY-TOKEN", delegation="DELEGATION",
)  # fmt: skip
TOOL_DONE = ToolCallCompleted(
    event_id="d", run_id="run_x", tenant_id="t", step=1, call_id="run_x/s0001/tool00", tool="pay", idempotency_key="k",
    content="paid; Authorization: Bearer abcdefghijklmnop", is_error=False, duration_ms=2.0,
)  # fmt: skip
CONTENT_KEYS = {
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
}


def test_chat_and_tool_attributes_without_content_by_default() -> None:
    chat = chat_attributes(REQUEST, [ANSWER], with_content=False, limit=8192)
    assert chat == {
        "gen_ai.operation.name": "chat", "gen_ai.conversation.id": "run_x", "gen_ai.request.max_tokens": 256,
        "gen_ai.request.model": "gpt-x", "gen_ai.provider.name": "openai", "gen_ai.response.model": "gpt-x-2026",
        "gen_ai.response.finish_reasons": ["tool_calls"], "gen_ai.usage.input_tokens": 120,
        "gen_ai.usage.output_tokens": 30, "gen_ai.usage.cache_read.input_tokens": 64, "agentstream.attempts": 1,
        "agentstream.call.id": "run_x/s0001/llm", "agentstream.step": 1,
    }  # fmt: skip
    tool = tool_attributes(TOOL, [TOOL_DONE], with_content=False, limit=8192)
    assert tool["gen_ai.operation.name"] == "execute_tool" and tool["gen_ai.tool.name"] == "pay"
    assert tool["gen_ai.tool.call.id"] == "call_1" and tool["gen_ai.conversation.id"] == "run_x"
    every = " ".join(str(v) for v in [*chat.values(), *tool.values()])
    for secret in ("pay ACME", "Paying now", "hunter2", "paid", "CAPABILITY", "DELEGATION"):
        assert secret not in every
    assert not CONTENT_KEYS & {*chat, *tool}


def test_content_when_opted_in_is_redacted_and_cut() -> None:
    never_trace("platform-model-key-123")
    chat = chat_attributes(REQUEST, [ANSWER], with_content=True, limit=8192)
    assert "pay ACME" in str(chat["gen_ai.input.messages"]) and "Paying now" in str(chat["gen_ai.output.messages"])
    assert "sk-abcdefghijklmnopqrstuv" not in str(chat["gen_ai.input.messages"])
    tool = tool_attributes(TOOL, [TOOL_DONE], with_content=True, limit=8192)
    assert "ACME" in str(tool["gen_ai.tool.call.arguments"]) and "hunter2" not in str(
        tool["gen_ai.tool.call.arguments"]
    )
    assert "paid" in str(tool["gen_ai.tool.call.result"]) and "abcdefghijklmnop" not in str(
        tool["gen_ai.tool.call.result"]
    )
    assert "CAPABILITY" not in str(tool) and "DELEGATION" not in str(tool)  # the call's tokens: never
    assert redact("key platform-model-key-123 here") == "key [redacted] here"
    assert redact('{"api_key": "abc", "client_secret":"x y", "name": "ok"}') == (
        '{"api_key": "[redacted]", "client_secret":"[redacted]", "name": "ok"}'
    )
    assert "AKIAABCDEFGHIJKLMNOP" not in redact("aws AKIAABCDEFGHIJKLMNOP")
    cut = chat_attributes(REQUEST, [], with_content=True, limit=256)
    assert str(cut["gen_ai.input.messages"]).endswith("more bytes]") or len(REQUEST.messages_json) <= 256


async def test_a_failed_model_call_is_an_error_span(spans: InMemorySpans) -> None:
    failed = LlmCallFailed(event_id="f", run_id="run_x", tenant_id="t", step=1, call_id="c", provider="openai",
                           error_type="rate_limited", message="secret prompt echoed", status=429, retryable=True,
                           attempt=3, final=True)  # fmt: skip

    async def call() -> list[RunEvent]:
        return [failed]

    assert await traced_chat(REQUEST, call) == [failed]
    await asyncio.sleep(0)
    TRACING.shutdown()
    [span] = spans.spans
    assert span.name == "chat gpt-x" and span.error == "rate_limited"
    assert span.attributes["error.type"] == "rate_limited"
    assert span.parent is not None and span.parent.span_id == run_span_id("run_x")  # no step: the run's root
    assert "secret prompt" not in str(span.attributes)


def test_a_clients_write_names_its_runs_root_span(spans: InMemorySpans) -> None:
    # What the gateway's journal client adds to a RunRequested, a cancel or a resume it writes.
    request = LlmCallRequested("e", "run_y", "t", 1, "c", "m", "[]", "[]", 8)
    [(name, value)] = TRACING.headers_for(request)
    assert name == TRACEPARENT and parse_traceparent(value, "run_y") == root_context("run_y")


class Hanging:
    """A collector that never answers."""

    def export(self, spans: Sequence[FinishedSpan]) -> bool:
        time.sleep(5)
        return False

    def close(self) -> None:
        pass


def test_a_collector_that_does_not_answer_does_not_hold_up_a_stop() -> None:
    assert TRACING.configure("test", TracingSettings(), sink=Hanging())
    TRACING.call_span("chat m", CLIENT, "run_z", time.time_ns(), {}, None, [])
    began = time.monotonic()
    TRACING.shutdown(timeout_s=0.3)
    assert time.monotonic() - began < 2.0 and TRACING.enabled is False


async def test_a_sampled_share_of_runs_is_traced_whole_and_the_rest_cost_no_span_nor_header(tmp_path: Path) -> None:
    # A ratio between the runs' own trace ids: some runs in, some out, decided by the run id alone.
    low = sorted(run_trace_id(run) & (2**64 - 1) for run in RUNS)
    ratio = (low[len(low) // 2 - 1] + low[len(low) // 2]) / 2 / 2**64
    settings = TracingSettings(sampler="traceidratio", sampler_arg=ratio)
    sink = InMemorySpans()
    assert TRACING.configure("test", settings, sink=sink)
    try:
        traced = {run for run in RUNS if TRACING.sampled(run)}
        assert traced == {run for run in RUNS if run_trace_id(run) & (2**64 - 1) < ratio * 2**64}  # OTel's rule
        assert 0 < len(traced) < len(RUNS)
        world = TracedWorld(tmp_path)
        assert await world.live(CrashPlan()) is False
    finally:
        TRACING.shutdown()
    assert {s.trace_id for s in sink.spans} == {run_trace_id(run) for run in traced}
    for run in traced:  # traced whole: the root and the chain, as when every run is traced
        names = Counter(s.name for s in sink.spans if s.trace_id == run_trace_id(run))
        assert names == Counter(["invoke_agent agentstream", "chat m", "finisher LlmCallCompleted"]), names
    for msg in world.broker.records(JOURNAL):
        run = (msg.key() or b"").decode().split("/")[0]
        if (msg.key() or b"").endswith(b"/req"):
            continue
        assert (TRACEPARENT in dict(header_pairs(msg))) == (run in traced), run


def test_samplers_by_their_standard_names() -> None:
    for name, arg, share in [("always_on", 0.0, 1.0), ("parentbased_always_off", 1.0, 0.0),
                             ("traceidratio", 0.25, 0.25), ("parentbased_traceidratio", 0.0, 0.0)]:  # fmt: skip
        settings = TracingSettings(sampler=name, sampler_arg=arg)  # type: ignore[arg-type]
        assert TRACING.configure("test", settings, sink=InMemorySpans())
        try:
            runs = [f"run_{i}" for i in range(2000)]
            got = sum(TRACING.sampled(r) for r in runs) / len(runs)
            assert abs(got - share) < 0.05, (name, got)
        finally:
            TRACING.shutdown()
