"""Where the warehouse lives, as each client is told: the embedded default resolves to nothing at
all (no S3 client, no extra connector keys), S3 files reach the sinks with their credentials only
as references into the worker's secrets file, and a REST catalog replaces the embedded one for the
sinks and the readers alike."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from agentstream.config import Settings
from agentstream.connect.journal import journal_sink
from agentstream.connect.local import warehouse_sinks
from agentstream.connect.location import S3_FILE_IO, WarehouseLocation, reader_catalog
from agentstream.connect.worker import ConnectWorker
from agentstream.settings import WarehouseSettings

ROOT = Path("/srv/wh")
SECRETS = Path("/home/x/connect/warehouse-secrets.properties")
S3 = WarehouseLocation(ROOT, "s3://audit-files/warehouse", None, "http://127.0.0.1:18333", "eu-west-1", True,
                       "AKIDEXAMPLE", "very-secret-key")  # fmt: skip


def _config(location: WarehouseLocation) -> dict[str, str]:
    sink = dataclasses.replace(journal_sink("acme", ROOT, 5), catalog=location.connector_catalog(SECRETS))
    return sink.config(ConnectWorker(Path("/w"), "127.0.0.1:9092", "acme", None))


def test_the_embedded_default_needs_no_resolving(tmp_path: Path) -> None:
    settings = dataclasses.replace(Settings.from_env(), home=tmp_path)
    assert reader_catalog(settings, WarehouseSettings()) is None
    local = WarehouseLocation(ROOT, ROOT.as_uri())
    assert local.connector_catalog(SECRETS) == {} and local.reader_catalog() is None and local.worker_secrets() is None
    config = _config(local)
    assert config["iceberg.catalog.catalog-impl"] == "org.apache.iceberg.jdbc.JdbcCatalog"
    assert config["iceberg.catalog.uri"] == f"jdbc:sqlite:{ROOT / 'catalog.db'}"
    assert config["iceberg.catalog.warehouse"] == str(ROOT)
    sinks = warehouse_sinks(settings, WarehouseSettings())
    assert all(sink.catalog == {} for sink in sinks)


def test_s3_files_keep_the_embedded_catalog_and_no_secret_in_the_connector() -> None:
    config = _config(S3)
    assert config["iceberg.catalog.catalog-impl"] == "org.apache.iceberg.jdbc.JdbcCatalog"  # still embedded
    assert config["iceberg.catalog.uri"] == f"jdbc:sqlite:{ROOT / 'catalog.db'}"
    assert config["iceberg.catalog.warehouse"] == "s3://audit-files/warehouse"
    assert config["iceberg.catalog.io-impl"] == S3_FILE_IO
    assert config["iceberg.catalog.s3.endpoint"] == "http://127.0.0.1:18333"
    assert config["iceberg.catalog.s3.path-style-access"] == "true"
    assert config["iceberg.catalog.s3.access-key-id"] == f"${{file:{SECRETS}:s3.access-key-id}}"
    assert config["iceberg.catalog.s3.secret-access-key"] == f"${{file:{SECRETS}:s3.secret-access-key}}"
    assert not any("very-secret-key" in v or "AKIDEXAMPLE" in v for v in config.values())
    assert S3.worker_secrets() == "s3.access-key-id=AKIDEXAMPLE\ns3.secret-access-key=very-secret-key\n"
    assert "very-secret-key" not in repr(S3)
    reader = S3.reader_catalog()
    assert reader is not None
    assert reader["type"] == "sql" and reader["uri"] == f"sqlite:///{ROOT / 'catalog.db'}"
    assert reader["warehouse"] == "s3://audit-files/warehouse"
    assert (reader["s3.endpoint"], reader["s3.region"], reader["s3.force-virtual-addressing"]) == (
        "http://127.0.0.1:18333", "eu-west-1", "false"
    )  # fmt: skip


def test_a_rest_catalog_replaces_the_embedded_one_for_sinks_and_readers() -> None:
    rest = WarehouseLocation(ROOT, ROOT.as_uri(), "https://catalog.example/api")
    config = _config(rest)
    assert config["iceberg.catalog.type"] == "rest"
    assert config["iceberg.catalog.uri"] == "https://catalog.example/api"
    assert "iceberg.catalog.catalog-impl" not in config and "iceberg.catalog.jdbc.schema-version" not in config
    assert rest.reader_catalog() == {"type": "rest", "uri": "https://catalog.example/api"}


def test_the_worker_resolves_file_references() -> None:
    text = ConnectWorker(Path("/w"), "127.0.0.1:9092", "acme", None).properties(Path("/plugins"))
    assert "config.providers=file" in text.splitlines()
    assert "config.providers.file.class=org.apache.kafka.common.config.provider.FileConfigProvider" in text
