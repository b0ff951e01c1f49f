"""Settings of the Prometheus endpoints (agentstream/metrics): where each process listens, and the
bearer token a scraper must present."""

from __future__ import annotations

from pathlib import Path

from agentstream.settings.base import ComponentSettings, variable


class MetricsSettings(ComponentSettings):
    COMPONENT = "metrics"

    port: int | None = variable(
        None, "AGENTSTREAM_METRICS_PORT",
        "each processor and gateway process serves `/metrics` on its own listener on this port; `0`: a free port "
        "per process (several on one host), announced in the targets directory; unset: no listener",
        ge=0, le=65535,
    )  # fmt: skip
    host: str = variable(
        "127.0.0.1", "AGENTSTREAM_METRICS_HOST",
        "the address the metrics listeners bind (`0.0.0.0` to be scraped from another host: set a token too)",
    )  # fmt: skip
    # repr=False keeps it out of logs and error messages.
    token: str | None = variable(
        None, "AGENTSTREAM_METRICS_TOKEN",
        "the bearer token a scraper must send (`Authorization: Bearer <token>`) to every `/metrics`; the "
        "gateway's API port serves `/metrics` only when it is set (tenant API keys never read platform metrics)",
        repr=False, min_length=16,
    )  # fmt: skip
    targets_dir: Path | None = variable(
        None, "AGENTSTREAM_METRICS_TARGETS_DIR",
        "where each listening process writes `<process>-<instance>.json`, a Prometheus `file_sd_configs` target "
        "(removed when it stops)",
        shown_default="`<home>/metrics`",
    )  # fmt: skip
    label_values: int = variable(
        200, "AGENTSTREAM_METRICS_LABEL_VALUES",
        "the most distinct values a label from data (model, tool, provider, error type) takes per metric; "
        "later ones are counted as `other`, so no caller can grow the series without bound",
        ge=1, le=100_000,
    )  # fmt: skip

    def resolved_targets_dir(self, home: Path) -> Path:
        return self.targets_dir or home / "metrics"
