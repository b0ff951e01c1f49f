"""The gateway's metrics: approvals waiting for a person and how long the oldest has waited, live
runs, open event streams (server-sent events), and how much of the journal the projection read.

Read from the run projection when scraped. Platform-wide, never per tenant: tenants can be many
(one series each would grow without bound), and a tenant's own numbers are in the API
(`/v1/costs`, `/v1/approvals`). So the gateway's `/metrics` is an operator's endpoint, open to the
scrape token only, never to a tenant's API key, whatever its scopes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentstream.contract.vocab import ApprovalStatus
from agentstream.gateway.projection import RunIndex
from agentstream.metrics.endpoint import ReadWhenScraped, metrics_route, process_registry

_OFF = (
    b'{"error":{"code":"not_found","message":"metrics are not served on the API port: set AGENTSTREAM_METRICS_TOKEN '
    b'(scrape with Authorization: Bearer <token>) or AGENTSTREAM_METRICS_PORT"}}'
)


class EventStreams:
    """ASGI middleware counting the responses that are event streams while they are open: every
    `text/event-stream` the API serves (a run's events, a run tree's), whichever route served it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.open = 0
        self.opened = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        streaming = False

        async def watch(message: Message) -> None:
            nonlocal streaming
            if message["type"] == "http.response.start" and _is_event_stream(message.get("headers", ())):
                streaming = True
                self.open += 1
                self.opened += 1
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            if streaming:
                self.open -= 1


def _is_event_stream(headers: Any) -> bool:
    return any(name == b"content-type" and value.startswith(b"text/event-stream") for name, value in headers)


class GatewayCollector(ReadWhenScraped):
    def __init__(self, index: RunIndex, streams: EventStreams) -> None:
        self.index = index
        self.streams = streams

    def collect(self) -> Iterator[Metric]:
        index = self.index
        now_ms = time.time() * 1000
        waiting = [a.request.requested_ms for a in list(index.approvals.values()) if a.status == ApprovalStatus.PENDING]
        yield GaugeMetricFamily("agentstream_approvals_waiting", "Approvals waiting for a person's decision",
                                value=len(waiting))  # fmt: skip
        yield GaugeMetricFamily(
            "agentstream_approval_oldest_wait_seconds", "How long the oldest waiting approval has waited (0: none)",
            value=max(0.0, (now_ms - min(waiting)) / 1000) if waiting else 0.0,
        )  # fmt: skip
        yield GaugeMetricFamily("agentstream_runs_active", "Runs neither ended nor halted", value=index.active_runs())
        yield GaugeMetricFamily("agentstream_sse_subscribers", "Open server-sent event streams",
                                value=self.streams.open)  # fmt: skip
        yield CounterMetricFamily("agentstream_sse_streams_opened", "Server-sent event streams opened",
                                  value=self.streams.opened)  # fmt: skip
        yield CounterMetricFamily("agentstream_gateway_journal_records_read", "Journal records the projection read",
                                  value=index.records_read)  # fmt: skip
        yield CounterMetricFamily("agentstream_gateway_journal_records_refused",
                                  "Journal records the projection refused (not the platform's)", value=index.refused)  # fmt: skip


def gateway_registry(index: RunIndex, streams: EventStreams) -> CollectorRegistry:
    registry = process_registry()
    registry.register(GatewayCollector(index, streams))
    return registry


def api_port_route(registry: CollectorRegistry, token: str | None) -> Any:
    """`/metrics` on the API port: behind the scrape token, or off (404) when none is set."""
    if token is not None:
        return metrics_route(registry, token)

    async def off(_request: Request) -> Response:
        return Response(_OFF, 404, media_type="application/json")

    return off
