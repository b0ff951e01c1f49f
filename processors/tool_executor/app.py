"""The tool executor process: registers its tools in the catalog, then performs ToolCallRequested events."""

from __future__ import annotations

import orjson

from agentstream.calls import CallLedgerCore
from agentstream.config import Settings
from agentstream.events import Event, ToolCallCompleted, ToolCallRequested, ToolRegistered
from agentstream.kafka.journal import RecordFactory
from agentstream.kafka.producer import AsyncProducer
from agentstream.process import Built, catalog_topic
from agentstream.tooling import ToolDescriptor
from processors.tool_executor.execute import ToolExecutor
from processors.tool_executor.hosts import default_tool_host


def _result_of(event: Event) -> str | None:
    return event.call_id if isinstance(event, ToolCallCompleted) else None


def registration(descriptor: ToolDescriptor) -> ToolRegistered:
    spec = descriptor.spec
    return ToolRegistered(
        event_id=spec.name,
        name=spec.name,
        version=descriptor.version,
        description=spec.description,
        input_schema_json=orjson.dumps(spec.input_schema, option=orjson.OPT_SORT_KEYS).decode(),
        source=descriptor.source,
        risk=descriptor.risk,
        idempotent=descriptor.idempotent,
        timeout_ms=int(descriptor.timeout_s * 1000),
    )


async def build(settings: Settings, records: RecordFactory, producer: AsyncProducer) -> Built:
    settings.home.mkdir(parents=True, exist_ok=True)
    host = await default_tool_host(settings.bank_path)
    topic = catalog_topic(settings)
    for descriptor in host.descriptors():
        record = records.keyed(topic, registration(descriptor))
        await producer.send(record.topic, record.value, key=record.key, headers=record.headers)
    executor = ToolExecutor(host)
    risks = {d.spec.name: d.risk for d in host.descriptors()}
    core = CallLedgerCore(
        "tool-executor",
        ToolCallRequested,
        _result_of,
        executor.perform,
        frozenset({"ToolCallCompleted"}),
        # No side effect starts after its run's cancel is journaled. The read barrier this takes
        # costs a broker round trip, so read-only tools, which change nothing, skip it.
        barrier=lambda request: risks.get(request.tool, "irreversible") != "read_only",
    )
    return Built(core=core, cleanup=[host.aclose])
