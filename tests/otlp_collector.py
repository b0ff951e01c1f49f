"""A tiny real OTLP/HTTP trace collector for tests: `POST /v1/traces` with an OTLP/JSON export
request, decoded strictly into opentelemetry-proto's own `ExportTraceServiceRequest` (an unknown
field or a wrongly typed value is a 400, as a real collector answers), every span kept in memory."""

from __future__ import annotations

import base64
import gzip
import json
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.json_format import ParseDict, ParseError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass(frozen=True)
class CollectedSpan:
    service: str
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_span_id: str  # "" for a root span
    name: str
    kind: int
    attributes: dict[str, Any]
    status_code: int
    links: tuple[str, ...]  # the span ids linked to
    start_ns: int = 0
    end_ns: int = 0
    status_message: str = ""
    resource: tuple[tuple[str, Any], ...] = ()


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind is not None else None


def _ids_as_proto_bytes(export: Any) -> Any:
    """OTLP/JSON writes trace and span ids as hex, where protobuf's JSON mapping of `bytes` is base64:
    the one difference the OTLP specification makes. Anything else must parse as it is."""
    if isinstance(export, list):
        return [_ids_as_proto_bytes(v) for v in export]
    if not isinstance(export, dict):
        return export
    out = {}
    for key, value in export.items():
        if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
            out[key] = base64.b64encode(bytes.fromhex(value)).decode()
        else:
            out[key] = _ids_as_proto_bytes(value)
    return out


@dataclass
class Collector:
    spans: list[CollectedSpan] = field(default_factory=list)
    requests: int = 0
    rejected: list[str] = field(default_factory=list)

    async def export(self, request: Request) -> Response:
        body = await request.body()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        if request.headers.get("content-type") != "application/json":
            return Response(b"only OTLP/JSON here", status_code=415)
        try:
            export = ParseDict(_ids_as_proto_bytes(json.loads(body)), ExportTraceServiceRequest())
        except (ParseError, ValueError) as exc:
            self.rejected.append(str(exc))
            return Response(str(exc).encode(), status_code=400)
        self.requests += 1
        for resource_spans in export.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        CollectedSpan(
                            service=str(resource.get("service.name", "")),
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            name=span.name,
                            kind=span.kind,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            status_code=span.status.code,
                            links=tuple(link.span_id.hex() for link in span.links),
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            status_message=span.status.message,
                            resource=tuple(sorted(resource.items())),
                        )
                    )
        return Response(b"{}", media_type="application/json")

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/traces", self.export, methods=["POST"])])

    def traces(self) -> dict[str, list[CollectedSpan]]:
        out: dict[str, list[CollectedSpan]] = {}
        for span in self.spans:
            out.setdefault(span.trace_id, []).append(span)
        return out
