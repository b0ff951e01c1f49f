"""The OpenTelemetry SDK side of tracing, imported only when tracing is on (the SDK and the OTLP
exporter cost every process and CLI command their import time otherwise).

Every span here is made after the fact, with its times and ids known: a step once its core has
applied the event, a call once it returned, a run's root once it ended. So spans are built as the
SDK's finished-span records and handed straight to its batch processor, which exports them from
a background thread: a fifth of the CPU of the tracer's start/end path, and the root span gets the
ids its run dictates without bending an id generator.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.util.types import Attributes

_OK = Status(StatusCode.UNSET)


def otlp_exporter(endpoint: str) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")


class Exporting:
    """This process's finished spans, batched to `exporter`; at most `queue` waiting (then dropped:
    a collector that is down or slow costs spans, never steps)."""

    def __init__(self, service: str, instance: str, exporter: SpanExporter, queue: int, scope: str) -> None:
        attributes = {"service.name": f"agentstream-{service}", "service.namespace": "agentstream"}
        if instance:
            attributes["service.instance.id"] = instance
        self.resource = Resource.create(attributes)
        self.scope = InstrumentationScope(scope)
        self.processor = BatchSpanProcessor(exporter, max_queue_size=queue)

    def emit(
        self, name: str, context: SpanContext, parent: SpanContext | None, kind: SpanKind, attributes: Attributes,
        start_ns: int, end_ns: int, error: str | None = None, links: Sequence[Link] = (),
    ) -> None:  # fmt: skip
        status = _OK
        if error is not None:
            attributes = {**(attributes or {}), "error.type": error}
            status = Status(StatusCode.ERROR, error)
        span = ReadableSpan(name, context, parent, resource=self.resource, attributes=attributes, kind=kind,
                            status=status, start_time=start_ns, end_time=end_ns, links=links,
                            instrumentation_scope=self.scope)  # fmt: skip
        self.processor.on_end(span)

    def shutdown(self) -> None:
        self.processor.shutdown()  # type: ignore[no-untyped-call]  # (the SDK leaves it unannotated)
