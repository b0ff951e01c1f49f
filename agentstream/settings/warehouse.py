"""Settings of the audit warehouse: the Kafka Connect worker the platform starts and the Iceberg
sink it registers (agentstream/connect)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from agentstream.settings.base import ComponentSettings, variable


class WarehouseSettings(ComponentSettings):
    COMPONENT = "warehouse"

    enabled: bool = variable(
        False,
        "AGENTSTREAM_WAREHOUSE",
        "feed the audit warehouse: `agentstream connect start` then builds the journal's converter "
        "(connectors/, Maven) and registers the Iceberg sinks of the journal and of the registry (tenants, tools, "
        "controls), and `agentstream dev` starts the Connect worker too (without it, the worker runs with no connector)",
    )
    connect_port: int = variable(
        18083, "AGENTSTREAM_CONNECT_PORT", "the local Connect worker's REST port (loopback only)", ge=1, le=65535
    )
    warehouse_dir: Path | None = variable(
        None, "AGENTSTREAM_WAREHOUSE_DIR", "the Iceberg tables' files and their SQLite JDBC catalog",
        shown_default="`<home>/warehouse`",
    )  # fmt: skip
    commit_interval_s: float = variable(
        10.0, "AGENTSTREAM_WAREHOUSE_COMMIT_INTERVAL_S",
        "how often the Iceberg sink commits what it wrote (rows become visible then)", gt=0,
    )  # fmt: skip
    connect_heap: str = variable("512m", "AGENTSTREAM_CONNECT_HEAP", "the Connect worker JVM's maximum heap")
    file_format: Literal["parquet", "avro"] = variable(
        "parquet", "AGENTSTREAM_WAREHOUSE_FORMAT",
        "the data files of the tables the journal's sink creates (avro: readable without a Parquet reader)",
    )  # fmt: skip

    retention_days: int = variable(
        0, "AGENTSTREAM_WAREHOUSE_RETENTION_DAYS",
        "days the audit warehouse keeps a tenant's rows unless `audit retention set` gave the tenant its own "
        "(applied by `agentstream audit retention apply`; 0: forever)", ge=0,
    )  # fmt: skip

    storage: Literal["local", "s3"] = variable(
        "local", "AGENTSTREAM_WAREHOUSE_STORAGE",
        "where the tables' data and metadata files go: `local` (the warehouse directory) or `s3` (the blob store's "
        "S3: the AGENTSTREAM_BLOB_S3_* endpoint and credentials, else the local SeaweedFS of `agentstream blobs "
        "start`), in the bucket below; the embedded SQLite catalog stays in the warehouse directory",
    )  # fmt: skip
    s3_bucket: str = variable(
        "agentstream-warehouse", "AGENTSTREAM_WAREHOUSE_S3_BUCKET", "the bucket of the tables' files (storage `s3`)",
        pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
    )  # fmt: skip
    rest_catalog: str | None = variable(
        None, "AGENTSTREAM_WAREHOUSE_REST_CATALOG",
        "an Iceberg REST catalog's URL, used by the sinks and the readers instead of the embedded SQLite catalog",
        shown_default="unset: the embedded SQLite catalog",
    )  # fmt: skip

    def resolved_warehouse(self, home: Path) -> Path:
        return (self.warehouse_dir or home / "warehouse").resolve()
