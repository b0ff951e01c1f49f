"""The span export path (agentstream/observability/otlp.py, batching.py, sinks.py) against a real
OTLP/HTTP collector: what the encoder writes is decoded strictly into opentelemetry-proto's own
`ExportTraceServiceRequest` (tests/otlp_collector.py), so every field name and type is OpenTelemetry's.
One contract runs over both sinks: the in-memory twin the unit tests read and the HTTP one."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from agentstream.observability.batching import SpanBatcher
from agentstream.observability.otlp import (
    CLIENT,
    INTERNAL,
    FinishedSpan,
    InMemorySpans,
    OtlpHttpSink,
    Resource,
    SpanRef,
    SpanSink,
    encode,
)
from agentstream.observability.sinks import http_sink, pairs, sink_for
from agentstream.serving import serving_embedded
from agentstream.settings import TracingSettings
from tests.otlp_collector import CollectedSpan, Collector

RESOURCE = Resource({"service.name": "agentstream-test", "deployment.environment": "ci"}, "agentstream")
ROOT = SpanRef(0x0123456789ABCDEF0123456789ABCDEF, 0x1111111111111111)
SPANS = [
    FinishedSpan.of(
        "invoke_agent agentstream",
        ROOT,
        None,
        INTERNAL,
        {"gen_ai.operation.name": "invoke_agent", "gen_ai.usage.input_tokens": 120},
        1_000,
        9_000,
        links=(SpanRef(0xABC, 0x2222222222222222),),
    ),
    FinishedSpan.of(
        "chat gpt-x",
        SpanRef(ROOT.trace_id, 0x3333333333333333),
        ROOT,
        CLIENT,
        {
            "gen_ai.response.finish_reasons": ["tool_calls", "stop"],
            "agentstream.cached": True,
            "agentstream.cost_usd": 0.0125,
            "error.type": "rate_limited",
        },
        2_000,
        3_000,
        "rate_limited",
    ),
]


def _as_collected(span: FinishedSpan, resource: Resource) -> CollectedSpan:
    """What a collector should see of `span`: the twin's view, mapped to the wire's."""
    return CollectedSpan(
        service=resource.attributes["service.name"],
        trace_id=f"{span.context.trace_id:032x}",
        span_id=f"{span.context.span_id:016x}",
        parent_span_id=f"{span.parent.span_id:016x}" if span.parent else "",
        name=span.name,
        kind=span.kind,
        attributes={k: list(v) if isinstance(v, (list, tuple)) else v for k, v in span.attributes.items()},
        status_code=2 if span.error else 0,
        links=tuple(f"{span_id:016x}" for _trace, span_id in span.links),
        start_ns=span.start_ns,
        end_ns=span.end_ns,
        status_message=span.error or "",
        resource=tuple(sorted(resource.attributes.items())),
    )


async def _through_http(spans: Sequence[FinishedSpan], **sink_options: object) -> Collector:
    collector = Collector()
    async with serving_embedded(collector.app(), "OTLP collector") as url:
        sink = OtlpHttpSink(url, RESOURCE, **sink_options)  # type: ignore[arg-type]
        try:
            assert await asyncio.to_thread(sink.export, spans)
        finally:
            sink.close()
    assert collector.rejected == []
    return collector


@pytest.mark.parametrize("kind", ["memory", "http"])
async def test_one_contract_over_the_twin_and_a_real_collector(kind: str) -> None:
    if kind == "memory":
        twin = InMemorySpans()
        assert twin.export(SPANS)
        seen = [_as_collected(s, RESOURCE) for s in twin.spans]
    else:
        seen = (await _through_http(SPANS)).spans
    assert seen == [_as_collected(s, RESOURCE) for s in SPANS]


async def test_a_process_sends_its_spans_through_its_exporting_child(monkeypatch: pytest.MonkeyPatch) -> None:
    """What every agentstream process does with tracing on: batches go to a child process over a
    pipe; the child posts them to the collector; closing the pipe sends what is left and ends it."""
    collector = Collector()
    async with serving_embedded(collector.app(), "OTLP collector") as url:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=ci")
        sink = sink_for("test", "")
        assert await asyncio.to_thread(sink.export, SPANS[:1])
        assert await asyncio.to_thread(sink.export, SPANS[1:])
        child = sink._child
        await asyncio.to_thread(sink.close)
    assert child is not None and child.returncode == 0
    assert collector.rejected == [] and collector.requests == 2
    expected = Resource(
        {"service.name": "agentstream-test", "service.namespace": "agentstream", "deployment.environment": "ci",
         "telemetry.sdk.name": "agentstream", "telemetry.sdk.language": "python"}, "agentstream",
    )  # fmt: skip
    assert collector.spans == [_as_collected(s, expected) for s in SPANS]


async def test_an_exporting_child_that_died_is_started_again(monkeypatch: pytest.MonkeyPatch) -> None:
    collector = Collector()
    async with serving_embedded(collector.app(), "OTLP collector") as url:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
        monkeypatch.setattr("agentstream.observability.export_process.RESTART_EVERY_S", 0.0)
        sink = sink_for("test", "")
        assert await asyncio.to_thread(sink.export, SPANS[:1])
        first = sink._child
        assert first is not None
        first.kill()
        await asyncio.to_thread(first.wait)
        # The first write after its death may still land in the dead pipe's buffer or fail; the
        # child is started again and what follows arrives.
        await asyncio.to_thread(sink.export, SPANS[1:])
        assert await asyncio.to_thread(sink.export, SPANS[1:])
        assert sink._child is not first
        await asyncio.to_thread(sink.close)
    assert any(s.name == SPANS[1].name for s in collector.spans)


async def test_hostile_names_and_values_arrive_intact_or_replaced_never_break_a_batch() -> None:
    # A tool's name and a model's text are tenant and model input: quotes, newlines, markup,
    # control characters, a lone surrogate (which JSON text can carry), numbers past 64 bits.
    hostile = 'pay"},{"name":"forged\n</script><img src=x>\x00\u2028\U0001f600'
    span = FinishedSpan.of(f"execute_tool {hostile}", SpanRef(ROOT.trace_id, 7), ROOT, INTERNAL,
                        {"gen_ai.tool.name": hostile, "bad": "a\ud800b", hostile: "key", "big": 2**70,
                         "nan": float("nan"), "inf": float("-inf")}, 1, 2)  # fmt: skip
    [got] = (await _through_http([span])).spans
    assert got.name == f"execute_tool {hostile}"
    assert got.attributes["gen_ai.tool.name"] == hostile and got.attributes[hostile] == "key"
    assert got.attributes["bad"] == "a?b"
    assert got.attributes["big"] == str(2**70)
    assert got.attributes["nan"] != got.attributes["nan"] and got.attributes["inf"] == float("-inf")


async def test_gzip_and_headers_reach_the_collector() -> None:
    seen: dict[str, str] = {}
    collector = Collector()
    app = collector.app()

    async def record_headers(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        seen.update({k.decode(): v.decode() for k, v in scope.get("headers", [])})
        await app(scope, receive, send)  # type: ignore[arg-type]

    settings = TracingSettings(
        headers="Authorization=Bearer%20s3cret,x-tenant = a%2Cb",
        compression="gzip",
        resource_attributes="deployment.environment=prod,service.name=spoofed",
    )  # fmt: skip
    async with serving_embedded(record_headers, "OTLP collector") as url:
        sink = http_sink("engine", "2", settings.model_copy(update={"endpoint": url}))
        assert await asyncio.to_thread(sink.export, SPANS[:1])
        sink.close()
    assert seen["authorization"] == "Bearer s3cret" and seen["x-tenant"] == "a,b"
    assert seen["content-encoding"] == "gzip" and seen["content-type"] == "application/json"
    [span] = collector.spans
    resource = dict(span.resource)
    assert resource["service.name"] == "agentstream-engine"  # a process's name is its own
    assert resource["deployment.environment"] == "prod" and resource["service.instance.id"] == "2"


def test_list_variables_parse_and_skip_a_malformed_pair_without_quoting_it(caplog: pytest.LogCaptureFixture) -> None:
    assert pairs("a=1, b = x%3Dy ,,c=", "V") == {"a": "1", "b": "x=y", "c": ""}
    with caplog.at_level(logging.WARNING):
        assert pairs("Authorization: Bearer topsecret,k=v", "OTEL_EXPORTER_OTLP_HEADERS") == {"k": "v"}
    assert "topsecret" not in caplog.text and "OTEL_EXPORTER_OTLP_HEADERS" in caplog.text


async def test_a_collector_that_refuses_or_is_down_costs_spans_and_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = OtlpHttpSink("http://user:pw@127.0.0.1:9", RESOURCE, timeout_s=0.5)  # nothing listens on port 9
    with caplog.at_level(logging.INFO, logger="agentstream.tracing"):
        assert not await asyncio.to_thread(sink.export, SPANS)
        assert not await asyncio.to_thread(sink.export, SPANS)
    sink.close()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "pw" not in caplog.text  # once per change of state; no credentials

    async def refuse(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        await send({"type": "http.response.start", "status": 503, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b""})  # type: ignore[operator]

    async with serving_embedded(refuse, "refusing collector") as url:
        refused = OtlpHttpSink(url, RESOURCE)
        assert not await asyncio.to_thread(refused.export, SPANS)
        refused.close()


class Slow:
    """A sink that takes its time (a slow collector), counting what it was given."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.batches: list[int] = []

    def export(self, spans: Sequence[FinishedSpan]) -> bool:
        time.sleep(self.delay_s)
        self.batches.append(len(spans))
        return True

    def close(self) -> None:
        pass


def _span(i: int) -> FinishedSpan:
    return FinishedSpan("s", 1, i + 1, 0, INTERNAL, {}, i, i + 1)


def test_a_full_batch_leaves_before_the_delay_and_shutdown_sends_the_rest() -> None:
    sink = Slow(0.0)
    batcher = SpanBatcher(sink, queue=10_000, batch=100, delay_s=60)
    for i in range(250):
        batcher.add(_span(i))
    deadline = time.monotonic() + 5
    while sum(sink.batches) < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sum(sink.batches) >= 200, "full batches waited for the delay"
    batcher.shutdown(5)
    assert sum(sink.batches) == 250 and max(sink.batches) <= 100 and batcher.exported == 250


def test_a_slow_collector_fills_the_queue_and_new_spans_are_dropped_never_waited_for() -> None:
    sink = Slow(0.5)
    batcher = SpanBatcher(sink, queue=1_000, batch=1_000, delay_s=0.01)
    began = time.perf_counter()
    for i in range(5_000):
        batcher.add(_span(i))
    assert time.perf_counter() - began < 0.5  # adding never waits on the collector
    assert batcher.dropped >= 3_000
    batcher.shutdown(5)
    assert batcher.exported + batcher.dropped == 5_000


def test_a_sink_that_raises_drops_its_batch_and_the_export_thread_lives_on(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        calls = 0

        def export(self, spans: Sequence[FinishedSpan]) -> bool:
            self.calls += 1
            raise RuntimeError("bug")

        def close(self) -> None:
            pass

    broken = Broken()
    sink: SpanSink = broken
    batcher = SpanBatcher(sink, queue=100, batch=1, delay_s=0.01)
    with caplog.at_level(logging.ERROR, logger="agentstream.tracing"):
        for i in range(5):
            batcher.add(_span(i))
            time.sleep(0.02)
        batcher.shutdown(2)
    assert broken.calls == 5 and batcher.failed == 5
    assert caplog.text.count("span export failed") == 1


def test_the_encoding_is_one_request_of_the_resource() -> None:
    body = encode(RESOURCE, SPANS)
    assert body.startswith(b'{"resourceSpans":[{"resource":{"attributes":[')
    assert body.count(b'"traceId"') == 3  # two spans and one link


async def test_an_exporting_child_outlives_no_parent(tmp_path: Path) -> None:
    """A processor SIGKILLed (the chaos benches do it all day) leaves no exporting process behind:
    the pipe's EOF ends the child, after it sent what it had."""
    collector = Collector()
    async with serving_embedded(collector.app(), "OTLP collector") as url:
        script = (
            "import sys, time\n"
            "from agentstream.observability.export_process import ProcessSink\n"
            "from agentstream.observability.otlp import FinishedSpan\n"
            "sink = ProcessSink('doomed', '0')\n"
            "assert sink.export([FinishedSpan('last words', 1, 2, 0, 1, {}, 1, 2)])\n"
            "print(sink._child.pid, flush=True)\n"
            "time.sleep(60)\n"
        )
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": url}
        parent = await asyncio.create_subprocess_exec(sys.executable, "-c", script, env=env,
                                                      stdout=asyncio.subprocess.PIPE)  # fmt: skip
        assert parent.stdout is not None
        child_pid = int(await asyncio.wait_for(parent.stdout.readline(), 20))
        parent.kill()
        await parent.wait()
        for _ in range(200):
            if not _alive(child_pid) and collector.spans:
                break
            await asyncio.sleep(0.05)
    assert not _alive(child_pid), "the exporting child outlived its parent"
    assert [s.name for s in collector.spans] == ["last words"]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_the_encoders_cache_stays_bounded_in_entries_and_size_whatever_values_come() -> None:
    # A model or a tool chooses values that land in attributes (a tool name, content when opted in):
    # many distinct ones, or huge ones, must not grow the exporting process without bound.
    from agentstream.observability import otlp

    huge, long = "x" * 1_000_000, "y" * 1_000
    spans = [FinishedSpan("s", 1, i + 1, 0, INTERNAL, {"gen_ai.tool.name": f"t{i}", "content": huge if i < 3 else long},
                          1, 2) for i in range(10_000)]  # fmt: skip
    body = encode(RESOURCE, spans[:3])
    assert body.count(huge.encode()) == 3
    for i in range(0, len(spans), 500):
        encode(RESOURCE, spans[i : i + 500])
    assert len(otlp._pairs) <= otlp._CACHE_LIMIT
    assert all(len(encoded) < len(long) for encoded in otlp._pairs.values())  # neither huge nor long kept
