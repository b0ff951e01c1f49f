"""An OTLP/HTTP endpoint that takes every trace export and keeps only counts: the benchmarks'
stand-in for a collector (Jaeger, Tempo), so tracing's cost is the platform's, not a backend's."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agentstream.serving import serving_embedded


@dataclass
class Sink:
    url: str = ""
    requests: int = 0
    bytes: int = 0

    async def export(self, request: Request) -> Response:
        self.bytes += len(await request.body())
        self.requests += 1
        # An empty ExportTraceServiceResponse is zero bytes of protobuf.
        return Response(b"", media_type="application/x-protobuf")


@contextlib.asynccontextmanager
async def otlp_sink() -> AsyncIterator[Sink]:
    sink = Sink()
    app = Starlette(routes=[Route("/v1/traces", sink.export, methods=["POST"])])
    async with serving_embedded(app, "OTLP sink") as url:
        sink.url = url
        yield sink


@contextlib.asynccontextmanager
async def traced(on: bool) -> AsyncIterator[Sink | None]:
    """With `on`, every process the benchmark starts exports its spans to a sink in this process
    (the standard variable, inherited by each child); without, tracing stays off (the default)."""
    if not on:
        yield None
        return
    async with otlp_sink() as sink:
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.url
        try:
            yield sink
        finally:
            del os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"]
