"""The Iceberg sink connector (Iceberg's own `IcebergSinkConnector`) as the worker is asked to run
it: topics into Iceberg tables in a local warehouse directory, catalogued by a JDBC catalog on
SQLite. Its coordinator commits the data files and the consumed offsets together through the
control topic, so each record lands once."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentstream.connect.worker import ConnectWorker, ConnectWorkerError
from agentstream.resources import resource_path

CONNECTOR_CLASS = "org.apache.iceberg.connect.IcebergSinkConnector"
JDBC_CATALOG = "org.apache.iceberg.jdbc.JdbcCatalog"
# The catalog's name: a JDBC catalog's rows carry it, so every reader and writer of catalog.db
# (the connectors, pyiceberg) must use the same one.
CATALOG_NAME = "iceberg"
# The platform's converter (connectors/): Avro single-object values into typed Connect structs.
CONVERTER = "dev.agentstream.connect.SingleObjectAvroConverter"


def converter_config(dropped: tuple[str, ...]) -> dict[str, str]:
    """The platform's converter reading every writer schema of schemas/ and schemas/history/, with
    the `dropped` fields (bare, or `Type.field`) never passed on to the sink."""
    schemas = resource_path("schemas")
    return {
        "value.converter": CONVERTER,
        "value.converter.schemas.dirs": f"{schemas},{schemas / 'history'}",
        "value.converter.drop.fields": ",".join(dropped),
    }


def dead_letter_config(topic: str) -> dict[str, str]:
    """A record the converter cannot read (unknown schema, truncated) is set aside to `topic` as it
    was, with the reason in its headers, instead of failing the task."""
    return {
        "errors.tolerance": "all",
        "errors.log.enable": "true",
        "errors.deadletterqueue.topic.name": topic,
        "errors.deadletterqueue.context.headers.enable": "true",
    }


@dataclass(frozen=True)
class IcebergSink:
    name: str
    topics: tuple[str, ...]
    # "namespace.table": one table for every topic; or several, comma-separated, that a field routes to.
    table: str
    warehouse: Path
    commit_interval_s: float = 10.0
    # Extra connector settings (e.g. the table properties of auto-created tables).
    extra: dict[str, str] = field(default_factory=dict)
    # The catalog's properties (connect/location.py) in place of the embedded SQLite JDBC catalog's:
    # a REST catalog, S3 files. Empty: the embedded default.
    catalog: dict[str, str] = field(default_factory=dict)

    @property
    def namespaces(self) -> set[str]:
        """The namespaces of its tables: created up front (connect/catalog.py), never by a task."""
        return {table.strip().rsplit(".", 1)[0] for table in self.table.split(",")}

    @property
    def catalog_uri(self) -> str:
        return f"jdbc:sqlite:{self.warehouse / 'catalog.db'}"

    def config(self, worker: ConnectWorker) -> dict[str, str]:
        # Every group and transactional id under the worker's `<prefix>.connect`: what its ACLs allow.
        group = f"{worker.group}.{self.name}"
        return {
            "connector.class": CONNECTOR_CLASS,
            "tasks.max": "1",
            "topics": ",".join(self.topics),
            "consumer.override.group.id": group,
            "iceberg.connect.group-id": group,
            "iceberg.control.topic": f"{worker.group}.iceberg-control",
            "iceberg.control.group-id-prefix": f"{worker.group}.control-",
            "iceberg.coordinator.transactional.prefix": f"{worker.group}.",
            "iceberg.control.commit.interval-ms": str(int(self.commit_interval_s * 1000)),
            # A round no task answers in time (the first after a start can be sent before a task's
            # control consumer is assigned, and is then never seen) commits what it has when this
            # expires; late answers are kept for the next round. Iceberg's 30 s default made the
            # first rows after every start wait that long.
            "iceberg.control.commit.timeout-ms": str(int(max(5.0, self.commit_interval_s) * 1000)),
            "iceberg.tables": self.table,
            "iceberg.tables.auto-create-enabled": "true",
            "iceberg.tables.evolve-schema-enabled": "true",
            "iceberg.catalog": CATALOG_NAME,
            **{f"iceberg.catalog.{key}": value for key, value in self.catalog_properties().items()},
            **self.extra,
        }

    @property
    def location(self) -> str:
        """Where its tables' files go, for people: the warehouse directory, a bucket, a REST catalog."""
        if self.catalog.get("type") == "rest":
            return f"the REST catalog at {self.catalog.get('uri', '?')}"
        return self.catalog.get("warehouse", str(self.warehouse))

    def catalog_properties(self) -> dict[str, str]:
        if "type" in self.catalog or "catalog-impl" in self.catalog:
            return dict(self.catalog)  # another catalog altogether
        embedded = {
            "catalog-impl": JDBC_CATALOG,
            "uri": self.catalog_uri,
            "warehouse": str(self.warehouse),
            # The catalog's own tables created with the views column (Iceberg's current layout).
            "jdbc.schema-version": "V1",
        }
        return {**embedded, **self.catalog}  # e.g. the files in S3, the catalog still embedded

    async def register(self, worker: ConnectWorker) -> None:
        """Creates the connector, or updates its configuration (PUT is idempotent)."""
        self.warehouse.mkdir(parents=True, exist_ok=True)
        await worker.request("PUT", f"/connectors/{self.name}/config", self.config(worker))

    async def wait_running(self, worker: ConnectWorker, timeout_s: float = 60.0) -> dict[str, Any]:
        """The connector's status once it and every task run; a failed task raises with its trace."""
        deadline = time.monotonic() + timeout_s
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                status = await worker.request("GET", f"/connectors/{self.name}/status")
            except ConnectWorkerError:
                await asyncio.sleep(0.5)  # 404 until the herder has read the config back
                continue
            states = [status["connector"]["state"], *(t["state"] for t in status.get("tasks", []))]
            failed = [t for t in status.get("tasks", []) if t["state"] == "FAILED"]
            if status["connector"]["state"] == "FAILED" or failed:
                trace = (failed[0] if failed else status["connector"]).get("trace", "")
                raise ConnectWorkerError(f"connector {self.name} failed:\n{trace[:3000]}")
            if status.get("tasks") and all(s == "RUNNING" for s in states):
                return status
            await asyncio.sleep(0.5)
        raise ConnectWorkerError(f"connector {self.name} was not running within {timeout_s:.0f}s: {status}")
