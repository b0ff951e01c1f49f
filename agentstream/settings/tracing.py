"""Settings of the OpenTelemetry traces (agentstream/observability): where spans are exported, and
whether they may carry prompt and tool content."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import field_validator

from agentstream.settings.base import ComponentSettings, variable


class TracingSettings(ComponentSettings):
    COMPONENT = "tracing"

    # The standard OpenTelemetry variables, so a deployment that already sets them for its other
    # services needs nothing of ours.
    endpoint: str | None = variable(
        None, "OTEL_EXPORTER_OTLP_ENDPOINT",
        "an OTLP/HTTP collector's base URL (`http://collector:4318`): every process exports its spans to "
        "`<endpoint>/v1/traces` (Jaeger, Tempo, any OpenTelemetry Collector); unset: no spans are made at all",
        repr=False,  # it may carry credentials (`https://user:token@collector`)
    )  # fmt: skip
    headers: str | None = variable(
        None, "OTEL_EXPORTER_OTLP_HEADERS",
        "headers sent with every export, `key=value` pairs separated by commas, values URL-encoded "
        "(`Authorization=Bearer%20...` for a hosted backend); never logged", repr=False,
    )  # fmt: skip
    timeout_ms: int = variable(
        10_000, "OTEL_EXPORTER_OTLP_TIMEOUT", "milliseconds an export may take before its batch is given up",
        ge=100, le=600_000,
    )  # fmt: skip
    certificate: str | None = variable(
        None, "OTEL_EXPORTER_OTLP_CERTIFICATE",
        "a PEM file of the CA certificates that verify an `https` collector (unset: the system's)",
    )  # fmt: skip
    compression: Literal["none", "gzip"] = variable(
        "none", "OTEL_EXPORTER_OTLP_COMPRESSION", "`gzip`: exports are compressed (CPU for bandwidth)"
    )
    resource_attributes: str | None = variable(
        None, "OTEL_RESOURCE_ATTRIBUTES",
        "more attributes of every process's resource, `key=value` pairs separated by commas "
        "(`deployment.environment=prod`); `service.name` stays the process's own",
    )  # fmt: skip
    schedule_delay_ms: int = variable(
        5_000, "OTEL_BSP_SCHEDULE_DELAY", "the most milliseconds a span waits before it is sent", ge=10, le=600_000
    )
    export_batch: int = variable(
        512, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "the most spans in one export (a batch leaves as soon as it is full)",
        ge=1, le=100_000,
    )  # fmt: skip
    # A larger default than the OpenTelemetry SDKs' 2,048: a platform at hundreds of steps per
    # second makes thousands of spans a second, and a full queue drops them.
    queue_spans: int = variable(
        20_480, "OTEL_BSP_MAX_QUEUE_SIZE",
        "the most spans a process holds waiting for export; past it new spans are dropped (a collector that is "
        "down or slow costs spans, never steps)",
        ge=512, le=10_000_000,
    )  # fmt: skip
    sampler: Literal[
        "always_on", "always_off", "traceidratio",
        "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio",
    ] = variable(
        "parentbased_always_on", "OTEL_TRACES_SAMPLER",
        "which runs are traced: every one (the default), none, or a share (`traceidratio`, with "
        "`OTEL_TRACES_SAMPLER_ARG`); a run is traced whole or not at all, decided by its run id alike in every process",
    )  # fmt: skip
    sampler_arg: float = variable(
        1.0, "OTEL_TRACES_SAMPLER_ARG", "the share of runs `traceidratio` traces, from 0 to 1", ge=0.0, le=1.0
    )
    content: bool = variable(
        False, "AGENTSTREAM_TRACE_CONTENT",
        "`true`: chat spans carry the prompt and the answer, tool spans the arguments and the result "
        "(cut to `AGENTSTREAM_TRACE_CONTENT_BYTES`, credentials redacted); off, spans carry names, ids and counts only",
    )  # fmt: skip
    content_bytes: int = variable(
        8192, "AGENTSTREAM_TRACE_CONTENT_BYTES",
        "the most bytes of each content attribute when `AGENTSTREAM_TRACE_CONTENT` is on",
        ge=256, le=1_000_000,
    )  # fmt: skip

    @field_validator("endpoint")
    @classmethod
    def _a_collector_url(cls, value: str | None) -> str | None:
        """Refused here, at start, rather than by the exporting child, which would fail and be
        restarted every few seconds for the life of the process."""
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL")
        if not parts.hostname:
            raise ValueError("names no host")
        try:
            parts.port  # noqa: B018 (it raises on a port that is no number or out of range)
        except ValueError:
            raise ValueError("has a port that is not a number from 0 to 65535") from None
        if parts.query or parts.fragment:
            raise ValueError("must not carry a query or a fragment (the export path is appended to it)")
        return value
