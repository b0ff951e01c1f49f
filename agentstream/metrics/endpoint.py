"""Serving a process's metrics: `/metrics` through prometheus_client's own encoders, behind the
scrape token, on a listener of the process's own (processors) or as a route of an existing app
(the gateway's API port).

A listener on port 0 gets a free port; the process then announces itself as a Prometheus
`file_sd_configs` target, `<targets dir>/<process>-<instance>.json`, removed when it stops: one
`file_sd_configs` entry over that directory finds every process on the host, whatever its port.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agentstream.serving import serving_embedded
from agentstream.settings import MetricsSettings

log = logging.getLogger("agentstream.metrics")


def process_registry() -> CollectorRegistry:
    """A registry with the process's CPU, memory, file descriptors, GC and Python version: every
    process's own, never the library's global one (a test process hosts several runtimes)."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class ReadWhenScraped(Collector):
    """A collector that reads its samples from live state when scraped: what it yields depends on
    what was seen, so there is nothing to check when it is registered."""

    def describe(self) -> Iterator[Metric]:
        return iter(())


def exposition(registry: CollectorRegistry, accept: str | None) -> Response:
    encoder, content_type = choose_encoder(accept or "")
    return Response(encoder(registry), media_type=content_type)


def authorized(token: str | None, authorization: str | None) -> bool:
    """No token configured: open (a listener bound to loopback by default). Else the bearer token,
    compared in constant time."""
    if token is None:
        return True
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def metrics_route(registry: CollectorRegistry, token: str | None) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        if not authorized(token, request.headers.get("authorization")):
            return Response(
                b'{"error":{"code":"unauthenticated","message":"scraping needs the metrics token: '
                b'Authorization: Bearer <AGENTSTREAM_METRICS_TOKEN>"}}',
                401, media_type="application/json", headers={"WWW-Authenticate": "Bearer"},
            )  # fmt: skip
        return exposition(registry, request.headers.get("accept"))

    return endpoint


def target_file(settings: MetricsSettings, home: Path, process: str, instance: str) -> Path:
    return settings.resolved_targets_dir(home) / f"{process}-{instance}.json"


@contextlib.asynccontextmanager
async def metrics_listener(
    registry: CollectorRegistry, settings: MetricsSettings, home: Path, process: str, instance: str
) -> AsyncIterator[str | None]:
    """Serves `/metrics` on the configured port while the block runs; yields its URL (None: no port
    configured, no listener). Embedded in the process's event loop: signals stay the host's."""
    if settings.port is None:
        yield None
        return
    app = Starlette(routes=[Route("/metrics", metrics_route(registry, settings.token), methods=["GET"])])
    async with serving_embedded(app, f"{process} metrics", settings.host, settings.port) as url:
        target = target_file(settings, home, process, instance)
        target.parent.mkdir(parents=True, exist_ok=True)
        hostport = url.removeprefix("http://")
        sd = [{"targets": [hostport], "labels": {"process": process, "instance_id": instance}}]
        # Written whole, then renamed: a scraper's file watcher never reads half a target.
        partial = target.with_suffix(".tmp")
        partial.write_text(json.dumps(sd))
        partial.replace(target)
        log.info("%s-%s serves metrics at %s/metrics", process, instance, url)
        try:
            yield url
        finally:
            target.unlink(missing_ok=True)


def read_targets(directory: Path) -> dict[str, str]:
    """`{"<process>-<instance>": "http://host:port/metrics"}` of every announced target (tests, tools)."""
    found: dict[str, str] = {}
    for path in sorted(directory.glob("*.json")):
        for group in json.loads(path.read_text()):
            for hostport in group["targets"]:
                found[path.stem] = f"http://{hostport}/metrics"
    return found
