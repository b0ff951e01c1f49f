"""Finished spans and their OTLP/HTTP wire form (the JSON encoding of the OTLP specification's
`ExportTraceServiceRequest`), posted to a collector's `/v1/traces`.

Why not the OpenTelemetry SDK's exporter: every span here is made after the fact with its ids and
times known, so the SDK's span objects add nothing but cost, and its protobuf encoder (Python
message objects built field by field) cost ~32 µs of CPU per span in this process, against ~5 µs
for this encoder (`bench/step_overhead.py --trace`, bench/RESULTS.md). OTLP/JSON is the same
protocol over the same endpoint, which every OTLP/HTTP receiver takes (the OpenTelemetry Collector,
Jaeger, Tempo): ids as hex strings, enums as their numbers, 64-bit integers as decimal strings. The
tests decode what this writes with opentelemetry-proto's own message types (tests/otlp_collector.py).
"""

from __future__ import annotations

import functools
import gzip
import http.client
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import orjson

from agentstream.observability.poster import Poster, without_credentials

log = logging.getLogger("agentstream.tracing")

AttributeValue = str | bool | int | float | Sequence[str]
Attributes = Mapping[str, AttributeValue]

# OTLP's Span.SpanKind numbers.
INTERNAL, SERVER, CLIENT = 1, 2, 3
_STATUS_ERROR = 2


class SpanRef(NamedTuple):
    """A span's place: its trace and its own id (a W3C trace context without flags: every span here is sampled)."""

    trace_id: int
    span_id: int


class FinishedSpan(NamedTuple):
    """A span, once it ended. Flat and of plain values only (a tuple, cheap to make on a step's
    path, and what `marshal` carries to the exporting process as it is)."""

    name: str
    trace_id: int
    span_id: int
    parent_id: int  # 0: a root span
    kind: int
    attributes: Attributes
    start_ns: int
    end_ns: int
    error: str | None = None  # error.type: the span's status is ERROR
    links: tuple[tuple[int, int], ...] = ()  # (trace id, span id) of each span linked to

    @property
    def context(self) -> SpanRef:
        return SpanRef(self.trace_id, self.span_id)

    @property
    def parent(self) -> SpanRef | None:
        return SpanRef(self.trace_id, self.parent_id) if self.parent_id else None

    @classmethod
    def of(
        cls, name: str, context: SpanRef, parent: SpanRef | None, kind: int, attributes: Attributes, start_ns: int,
        end_ns: int, error: str | None = None, links: tuple[SpanRef, ...] = (),
    ) -> FinishedSpan:  # fmt: skip
        if error is not None:  # the span's status, and its `error.type` attribute, as the conventions ask
            attributes = {**attributes, "error.type": error}
        return cls(name, context.trace_id, context.span_id, parent.span_id if parent else 0, kind, attributes,
                   start_ns, end_ns, error, tuple([(t, i) for t, i in links]) if links else ())  # fmt: skip


class SpanSink(Protocol):
    """Where batches of finished spans go: a collector over OTLP/HTTP, or memory (tests)."""

    def export(self, spans: Sequence[FinishedSpan]) -> bool: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class Resource:
    """The process the spans come from (`service.name`, ...): the same for every batch it sends."""

    attributes: Mapping[str, str]
    scope: str


# -- encoding ---------------------------------------------------------------------------------------


_INT64 = range(-(2**63), 2**63)


def _json(value: str) -> str:
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:  # a lone surrogate (JSON text can carry one): not UTF-8, so replaced
        return orjson.dumps(value.encode("utf-8", "replace").decode()).decode()


def _value(value: AttributeValue) -> str:
    # bool before int: a bool is an int to isinstance.
    if isinstance(value, str):
        return f'{{"stringValue":{_json(value)}}}'
    if isinstance(value, bool):
        return '{"boolValue":true}' if value else '{"boolValue":false}'
    if isinstance(value, int):
        # Past 64 bits a collector refuses the whole batch: such a number travels as text.
        return f'{{"intValue":"{value}"}}' if value in _INT64 else f'{{"stringValue":"{value}"}}'
    if isinstance(value, float):
        if value != value or value in (math.inf, -math.inf):  # JSON has no NaN: protobuf's JSON names them
            return f'{{"doubleValue":"{"NaN" if value != value else "Infinity" if value > 0 else "-Infinity"}"}}'
        return f'{{"doubleValue":{orjson.dumps(value).decode()}}}'
    values = ",".join([_value(v) for v in value])
    return f'{{"arrayValue":{{"values":[{values}]}}}}'


@functools.lru_cache(maxsize=1024)  # the platform's attribute names: a few dozen, on every span
def _key(key: str) -> str:
    # Escaped too: a resource attribute's key comes from OTEL_RESOURCE_ATTRIBUTES.
    return f'{{"key":{_json(key)},"value":'


# Values that differ on nearly every span: caching them would only churn the cache.
_UNIQUE = frozenset({"agentstream.event.id", "gen_ai.conversation.id", "gen_ai.tool.call.id", "gen_ai.response.id"})
_CACHE_LIMIT = 4096
# Longer values (prompt or tool content when opted in, up to 1 MB each) are never kept: a cache of
# 4,096 of them could hold gigabytes. Names, types and ids are far shorter.
_CACHE_VALUE_CHARS = 256
_pairs: dict[tuple[str, str | int], str] = {}


def _pair(key: str, value: AttributeValue) -> str:
    # Most attribute values repeat span after span (a processor's name, an event type, a model, a
    # tool, a step number): their encoded form is made once. The cache is emptied when full, so it
    # stays bounded whatever values come, in entries and in size. Exact types only: True == 1, but
    # encodes differently.
    if (type(value) is int or (type(value) is str and len(value) <= _CACHE_VALUE_CHARS)) and key not in _UNIQUE:
        try:
            return _pairs[key, value]
        except KeyError:
            if len(_pairs) >= _CACHE_LIMIT:
                _pairs.clear()
            encoded = _pairs[key, value] = f"{_key(key)}{_value(value)}}}"
            return encoded
    return f"{_key(key)}{_value(value)}}}"


def _attributes(attributes: Attributes) -> str:
    return ",".join([_pair(k, v) for k, v in attributes.items()])


def _span(span: FinishedSpan | tuple[Any, ...]) -> str:
    # Unpacked rather than read by name: the exporting process hands the rows `marshal` gave it as
    # they are (plain tuples in FinishedSpan's field order), without making a FinishedSpan of each.
    name, trace_id, span_id, parent_id, kind, attributes, start_ns, end_ns, error, links = span
    out = f'{{"traceId":"{trace_id:032x}","spanId":"{span_id:016x}",'
    if parent_id:
        out += f'"parentSpanId":"{parent_id:016x}",'
    out += (f'"name":{_json(name)},"kind":{kind},"startTimeUnixNano":"{start_ns}",'
            f'"endTimeUnixNano":"{end_ns}","attributes":[{_attributes(attributes)}]')  # fmt: skip
    if links:
        out += ',"links":[' + ",".join([f'{{"traceId":"{t:032x}","spanId":"{i:016x}"}}' for t, i in links]) + "]"
    if error is not None:
        out += f',"status":{{"code":{_STATUS_ERROR},"message":{_json(error)}}}'
    return out + "}"


def encode(resource: Resource, spans: Sequence[FinishedSpan] | Sequence[tuple[Any, ...]]) -> bytes:
    """One OTLP/JSON `ExportTraceServiceRequest` holding `spans` (FinishedSpans, or tuples of their
    fields in order), all of `resource`."""
    body = ",".join([_span(s) for s in spans])
    return (f'{{"resourceSpans":[{{"resource":{{"attributes":[{_attributes(resource.attributes)}]}},'
            f'"scopeSpans":[{{"scope":{{"name":{_json(resource.scope)}}},"spans":[{body}]}}]}}]}}').encode()  # fmt: skip


# -- sinks ------------------------------------------------------------------------------------------


@dataclass
class OtlpHttpSink:
    """Posts each batch to `<endpoint>/v1/traces` as OTLP/JSON. A failed post loses its batch (and
    says so in the log once per change of state): spans never hold up the work they describe."""

    endpoint: str
    resource: Resource
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 10.0
    gzip: bool = False
    verify: str | bool = True
    _poster: Poster = field(init=False)
    _failing: bool = False

    def __post_init__(self) -> None:
        self.url = self.endpoint.rstrip("/") + "/v1/traces"
        self._shown = without_credentials(self.url)  # no credentials in logs
        headers = {"content-type": "application/json", **self.headers}
        if self.gzip:
            headers["content-encoding"] = "gzip"
        self._poster = Poster(self.url, headers, timeout_s=self.timeout_s, verify=self.verify)

    def export(self, spans: Sequence[FinishedSpan] | Sequence[tuple[Any, ...]]) -> bool:
        body = encode(self.resource, spans)
        if self.gzip:
            body = gzip.compress(body, compresslevel=1)
        try:
            status = self._poster.post(body)
            ok, problem = status < 300, f"HTTP {status}"
        except (OSError, http.client.HTTPException) as exc:
            ok, problem = False, type(exc).__name__  # the type only: a message may quote the URL's credentials
        if ok == self._failing:  # a change of state: one line, not one per batch
            self._failing = not ok
            if ok:
                log.info("trace export to %s works again", self._shown)
            else:
                log.warning("trace export to %s failed (%s): spans are dropped until it works", self._shown, problem)
        return ok

    def close(self) -> None:
        self._poster.close()


@dataclass
class InMemorySpans:
    """Every exported span, kept: the sink the unit tests read."""

    spans: list[FinishedSpan] = field(default_factory=list)

    def export(self, spans: Sequence[FinishedSpan]) -> bool:
        self.spans.extend(spans)
        return True

    def close(self) -> None:
        pass
