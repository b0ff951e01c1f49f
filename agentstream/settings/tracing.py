"""Settings of the OpenTelemetry traces (agentstream/observability): where spans are exported, and
whether they may carry prompt and tool content."""

from __future__ import annotations

from agentstream.settings.base import ComponentSettings, variable


class TracingSettings(ComponentSettings):
    COMPONENT = "tracing"

    # The standard OpenTelemetry variable, so a deployment that already sets it for its other
    # services needs nothing of ours; the exporter's own OTEL_EXPORTER_OTLP_* (headers, timeout,
    # certificate) apply as the SDK documents them.
    endpoint: str | None = variable(
        None, "OTEL_EXPORTER_OTLP_ENDPOINT",
        "an OTLP/HTTP collector's base URL (`http://collector:4318`): every process exports its spans to "
        "`<endpoint>/v1/traces` (Jaeger, Tempo, any OpenTelemetry Collector); unset: no spans are made at all",
        pattern=r"^https?://",
    )  # fmt: skip
    # The SDK's own variable, with a larger default than its 2,048: a platform at hundreds of steps
    # per second makes thousands of spans a second, and a full queue drops them.
    queue_spans: int = variable(
        20_480, "OTEL_BSP_MAX_QUEUE_SIZE",
        "the most spans a process holds waiting for export; past it new spans are dropped (a collector that is "
        "down or slow costs spans, never steps)",
        ge=512, le=10_000_000,
    )  # fmt: skip
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
