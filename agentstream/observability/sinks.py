"""The collector a process exports its spans to, as the standard OpenTelemetry variables describe
it (TracingSettings): endpoint, headers, timeout, certificate, compression, resource attributes."""

from __future__ import annotations

import logging
from urllib.parse import unquote

from agentstream.observability.export_process import ProcessSink
from agentstream.observability.otlp import OtlpHttpSink, Resource
from agentstream.settings import TracingSettings

log = logging.getLogger("agentstream.tracing")
SCOPE = "agentstream"  # the instrumentation scope of every span


def pairs(text: str | None, variable: str) -> dict[str, str]:
    """`k1=v1,k2=v2` (values URL-encoded), the OpenTelemetry variables' list form. A malformed pair
    is skipped with a warning naming the variable only: a header's value may be a credential."""
    out: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            log.warning("%s: a pair without `key=` is ignored", variable)
            continue
        out[unquote(key.strip())] = unquote(value.strip())
    return out


def resource(service: str, instance: str, settings: TracingSettings) -> Resource:
    attributes = pairs(settings.resource_attributes, "OTEL_RESOURCE_ATTRIBUTES")
    attributes.update({
        "service.name": f"agentstream-{service}",
        "service.namespace": "agentstream",
        "telemetry.sdk.name": "agentstream",
        "telemetry.sdk.language": "python",
    })  # fmt: skip
    if instance:
        attributes["service.instance.id"] = instance
    return Resource(attributes, SCOPE)


def http_sink(service: str, instance: str, settings: TracingSettings) -> OtlpHttpSink:
    """The collector itself: what the exporting process posts to."""
    return OtlpHttpSink(
        endpoint=settings.endpoint or "",
        resource=resource(service, instance, settings),
        headers=pairs(settings.headers, "OTEL_EXPORTER_OTLP_HEADERS"),
        timeout_s=settings.timeout_ms / 1000,
        gzip=settings.compression == "gzip",
        verify=settings.certificate or True,
    )


def sink_for(service: str, instance: str) -> ProcessSink:
    """Where a process's spans go: its exporting process, which reads the same settings."""
    return ProcessSink(service, instance)
