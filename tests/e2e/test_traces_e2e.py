"""Traces end to end: every process of a real deployment (each processor its own OS process, and
the gateway) exports to an OTLP/HTTP collector running in this test. Runs requested through the
run API come out as one trace each, whose id is the run's, holding the run's `invoke_agent` span,
its `chat` and `execute_tool` spans with the GenAI attributes, and the processors' step spans,
connected across processes by the `traceparent` the journal records carry; and with content off
(the default), nothing of the task, the prompts, the answers or the tool arguments and results."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import httpx
import pytest

from agentstream.cli.local import _gateway_answers
from agentstream.localkafka import free_port
from agentstream.observability.tracing import run_span_id, run_trace_id
from agentstream.serving import serving_embedded
from agentstream.stack import PAYMENTS_AUTO_APPROVED, Deployment
from agentstream.tenancy.admin import create_tenant, issue_key
from tests.harness import isolated_settings
from tests.otlp_collector import CollectedSpan, Collector

MARKER = "TASK-MARKER-7f3a"
# What the demo scenario's model says and its tools are given and return: none of it may be in a span.
CONTENT = (MARKER, "4200 + 3800", "Asia/Tokyo", "ACC-204-778", "Dinner share", "3125 cents", "12500")


def complete(trace: list[CollectedSpan]) -> bool:
    """The run's root span is in, and every span's parent too (nothing still buffered somewhere)."""
    ids = {s.span_id for s in trace}
    return any(s.name.startswith("invoke_agent") for s in trace) and all(
        s.parent_span_id in ids for s in trace if s.parent_span_id
    )


async def test_each_run_is_one_trace_across_every_process(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    collector = Collector()
    settings, scen = await isolated_settings(kafka_bootstrap, tmp_path_factory.mktemp("traces"), "tr")
    await create_tenant(settings, "acme", "Acme", rate_per_s=100, burst=200, max_active_runs=20)
    key = await issue_key(settings, "acme", "test")
    async with serving_embedded(collector.app(), "OTLP collector") as otlp:
        # The SDK's own variable: spans leave each process every 200 ms instead of every 5 s.
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp, "OTEL_BSP_SCHEDULE_DELAY": "200"}
        port = free_port()
        async with Deployment(settings, [scen], policies={"acme": PAYMENTS_AUTO_APPROVED}, extra_env=env) as d:
            assert d.procs is not None
            d.procs.start_gateway(port=port)
            url = f"http://127.0.0.1:{port}"
            await _gateway_answers(d.procs, url, 120)  # as `agentstream dev` waits for it
            async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=90) as c:
                responses = await asyncio.gather(*(
                    c.post("/v1/runs", json={"task": f"[scenario:demo] {MARKER} split the bill", "max_steps": 10},
                           headers={"Idempotency-Key": uuid.uuid4().hex}, params={"wait": 60})
                    for _ in range(2)
                ))  # fmt: skip
            runs = [r.json() for r in responses]
            assert [r["status"] for r in runs] == ["completed", "completed"], runs
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                traces = collector.traces()
                if all(complete(traces.get(f"{run_trace_id(r['id']):032x}", [])) for r in runs):
                    break
                await asyncio.sleep(0.2)

    traces = collector.traces()
    for run in runs:
        run_id = run["id"]
        trace = traces.get(f"{run_trace_id(run_id):032x}", [])
        assert complete(trace), f"run {run_id}: {len(trace)} spans, root or parents missing"
        by_id = {s.span_id: s for s in trace}
        assert len(by_id) == len(trace), "a span was exported twice"
        # The root: the run's own span id, with the GenAI attributes and the run as the conversation.
        roots = [s for s in trace if not s.parent_span_id]
        assert [(r.name, r.span_id) for r in roots] == [("invoke_agent agentstream", f"{run_span_id(run_id):016x}")]
        root = roots[0].attributes
        assert root["gen_ai.operation.name"] == "invoke_agent" and root["gen_ai.conversation.id"] == run_id
        assert root["agentstream.run.status"] == "completed" and root["gen_ai.usage.input_tokens"] > 0
        assert all(s.attributes.get("gen_ai.conversation.id") == run_id for s in trace)

        chats = [s for s in trace if s.name.startswith("chat")]
        assert len(chats) == 5, Counter(s.name for s in trace)  # the demo's five model turns
        for chat in chats:
            a = chat.attributes
            assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] and a["gen_ai.response.model"]
            assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
            assert chat.service == "agentstream-model-invoker" and chat.kind == 3  # SPAN_KIND_CLIENT
        tools = [s for s in trace if s.name.startswith("execute_tool")]
        assert Counter(s.attributes["gen_ai.tool.name"] for s in tools) == {
            "calculator": 2, "get_current_time": 2, "transfer_funds": 1,
        }  # fmt: skip
        for tool in tools:
            assert tool.attributes["gen_ai.operation.name"] == "execute_tool" and tool.attributes["gen_ai.tool.call.id"]
            assert tool.service == "agentstream-tool-executor" and tool.status_code != 2  # not an error

        # Across processes: a call's result is processed by the orchestrator under the call's span,
        # which only the record's traceparent header can have told it.
        services = {s.service for s in trace}
        assert {"agentstream-orchestrator", "agentstream-model-invoker", "agentstream-tool-executor",
                "agentstream-policy-gate"} <= services, services  # fmt: skip
        parents = [(s.service, by_id[s.parent_span_id].name) for s in trace if s.parent_span_id]
        under_chat = [p for service, p in parents if service == "agentstream-orchestrator" and p.startswith("chat")]
        assert len(under_chat) == 5
        under_tool = [
            p for service, p in parents if service == "agentstream-orchestrator" and p.startswith("execute_tool")
        ]
        assert len(under_tool) >= 4  # at least once per step that called tools (once all its results are in)

        # Content is off by default: nothing the task, the model or the tools said is in any span.
        text = repr([(s.name, s.attributes) for s in trace])
        assert not [c for c in CONTENT if c in text], [c for c in CONTENT if c in text]
        assert not {"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.tool.call.arguments",
                    "gen_ai.tool.call.result"} & {k for s in trace for k in s.attributes}  # fmt: skip
