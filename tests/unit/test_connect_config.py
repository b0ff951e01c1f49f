"""The Connect worker's and the Iceberg sink's configuration, without a broker: every client of the
worker authenticates as its principal, every group and transactional id it uses falls under the
ACL prefix topics.yaml grants it, the pins match the broker's, and the warehouse settings parse."""

from __future__ import annotations

import sqlite3
import tomllib
from pathlib import Path

import pytest

from agentstream import resources
from agentstream.config import Settings
from agentstream.connect.catalog import ensure_catalog
from agentstream.connect.jars import LOG4J, PLUGIN_POM, WORKER_POM, pinned
from agentstream.connect.journal import JOURNAL_CONNECTOR, dlq_topic, journal_sink
from agentstream.connect.local import warehouse_sinks
from agentstream.connect.registry import REGISTRY_CONNECTOR, TABLES, TOPIC_FIELD, registry_sink
from agentstream.connect.registry import dlq_topic as registry_dlq
from agentstream.connect.sink import CATALOG_NAME, IcebergSink
from agentstream.connect.worker import ConnectWorker
from agentstream.kafka.acls import Grant, connect_prefix, expected_grants
from agentstream.kafka.auth import CONNECT, Principal
from agentstream.localkafka import POM as BROKER_POM
from agentstream.settings import SettingsError, WarehouseSettings, load
from agentstream.topics import load_topics

PRINCIPAL = Principal(CONNECT, "s3cret-pw")


def _props(worker: ConnectWorker) -> dict[str, str]:
    text = worker.properties(Path("/plugins"))
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def test_the_worker_and_every_client_it_makes_authenticate_as_its_principal() -> None:
    props = _props(ConnectWorker(Path("/w"), "127.0.0.1:9092", "acme", PRINCIPAL, port=18099))
    for prefix in ("", "producer.", "consumer.", "admin."):
        assert props[f"{prefix}security.protocol"] == "SASL_PLAINTEXT"
        assert props[f"{prefix}sasl.mechanism"] == "SCRAM-SHA-512"
        assert 'username="connect" password="s3cret-pw"' in props[f"{prefix}sasl.jaas.config"]
    assert props["listeners"] == "http://127.0.0.1:18099"  # the REST API on loopback only
    assert props["group.id"] == "acme.connect"
    internal = {props[f"{k}.storage.topic"] for k in ("config", "offset", "status")}
    assert internal == {"acme.connect.configs", "acme.connect.offsets", "acme.connect.status"}


def test_more_plugin_folders_join_the_plugin_path() -> None:
    worker = ConnectWorker(Path("/w"), "127.0.0.1:9092", "acme", None, plugin_dirs=(Path("/conv"),))
    assert _props(worker)["plugin.path"] == "/plugins,/conv"


def test_a_broker_without_sasl_gets_no_credentials() -> None:
    props = _props(ConnectWorker(Path("/w"), "127.0.0.1:9092", "acme", None))
    assert not any("sasl" in key or "security" in key for key in props)


def test_the_worker_topics_and_prefixes_are_what_topics_yaml_grants() -> None:
    specs = load_topics("acme")
    worker = ConnectWorker(Path("/w"), "127.0.0.1:9092", "acme", PRINCIPAL)
    assert connect_prefix(specs) == worker.group
    props = _props(worker)
    for key in ("config", "offset", "status"):
        spec = next(s for s in specs.values() if s.name == props[f"{key}.storage.topic"])
        assert spec.writers == spec.readers == (CONNECT,) and spec.config["cleanup.policy"] == "compact"
    assert next(s for s in specs.values() if s.name == props["config.storage.topic"]).partitions == 1
    grants = expected_grants(specs)
    config = IcebergSink("audit", ("acme.x",), "audit.events", Path("/wh")).config(worker)
    # Every group and transactional id the sink uses starts with a PREFIXED grant's name.
    for key, resource in (("consumer.override.group.id", "GROUP"), ("iceberg.connect.group-id", "GROUP"),
                          ("iceberg.control.group-id-prefix", "GROUP"),
                          ("iceberg.coordinator.transactional.prefix", "TRANSACTIONAL_ID")):  # fmt: skip
        assert config[key].startswith(worker.group)
        assert Grant(CONNECT, resource, "PREFIXED", worker.group, "DESCRIBE") in grants
    control = next(s for s in specs.values() if s.name == config["iceberg.control.topic"])
    assert control.writers == control.readers == (CONNECT,)
    # Nothing wider: no other principal gets the connect prefix, and connect no other prefix.
    assert {g.name for g in grants if g.principal == CONNECT and g.pattern == "PREFIXED"} == {worker.group}


def test_the_sink_catalogs_in_sqlite_under_the_warehouse() -> None:
    worker = ConnectWorker(Path("/w"), "127.0.0.1:9092", "acme", PRINCIPAL)
    config = IcebergSink("audit", ("a", "b"), "audit.events", Path("/wh"), commit_interval_s=2.5).config(worker)
    assert config["topics"] == "a,b"
    assert config["iceberg.catalog.catalog-impl"] == "org.apache.iceberg.jdbc.JdbcCatalog"
    assert config["iceberg.catalog.uri"] == "jdbc:sqlite:/wh/catalog.db"
    assert config["iceberg.control.commit.interval-ms"] == "2500"
    assert "s3cret" not in str(config)  # the REST API shows a connector's config: no password in it


def test_the_worker_runs_the_brokers_kafka_version_and_every_version_is_pinned() -> None:
    assert pinned(WORKER_POM, "kafka.version") == pinned(BROKER_POM, "kafka.version")
    for pom in (WORKER_POM, PLUGIN_POM):
        text = pom.read_text()
        assert text.count("<dependency>") == text.count("<version>") - 1  # the project's own <version>


def test_the_connect_build_files_ship_in_the_wheel() -> None:
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    shipped = pyproject["tool"]["setuptools"]["package-data"]["agentstream.resources"]
    root = Path(resources.__file__).parent
    for path in (WORKER_POM, PLUGIN_POM, LOG4J):
        assert str(path.relative_to(root)) in shipped


def test_warehouse_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AGENTSTREAM_WAREHOUSE", "AGENTSTREAM_CONNECT_PORT", "AGENTSTREAM_WAREHOUSE_DIR"):
        monkeypatch.delenv(name, raising=False)
    wh = load(WarehouseSettings)
    assert (wh.enabled, wh.connect_port, wh.resolved_warehouse(tmp_path)) == (False, 18083, tmp_path / "warehouse")
    monkeypatch.setenv("AGENTSTREAM_WAREHOUSE", "true")
    monkeypatch.setenv("AGENTSTREAM_WAREHOUSE_DIR", str(tmp_path / "wh"))
    wh = load(WarehouseSettings)
    assert wh.enabled and wh.resolved_warehouse(Path("/elsewhere")) == tmp_path / "wh"
    monkeypatch.setenv("AGENTSTREAM_CONNECT_PORT", "0")
    with pytest.raises(SettingsError, match="AGENTSTREAM_CONNECT_PORT"):
        load(WarehouseSettings)


def test_the_journal_sink_reads_the_journal_and_sets_poison_aside_on_granted_topics() -> None:
    specs = {s.name: s for s in load_topics("acme").values()}
    worker = ConnectWorker(Path("/w"), "127.0.0.1:9092", "acme", PRINCIPAL)
    config = journal_sink("acme", Path("/wh"), 3.0).config(worker)
    assert config["topics"] == "acme.runs.journal" and CONNECT in specs["acme.runs.journal"].readers
    assert config["iceberg.tables"] == "audit.events"  # one events table for every event type
    assert config["iceberg.tables.default-partition-by"] == "day(journal_time),tenant_id"
    assert config["transforms.time.timestamp.field"] == "journal_time"
    # Credentials are dropped by the converter, before a record reaches the sink.
    assert set(config["value.converter.drop.fields"].split(",")) >= {"capability", "delegation"}
    assert config["errors.tolerance"] == "all" and config["errors.deadletterqueue.context.headers.enable"] == "true"
    dlq = specs[config["errors.deadletterqueue.topic.name"]]
    assert dlq.name == dlq_topic("acme") and CONNECT in dlq.writers and dlq.config["cleanup.policy"] == "delete"


def test_the_converter_ships_in_the_package() -> None:
    assert (resources.resource_path("connectors") / "pom.xml").is_file()


def test_the_registry_sink_routes_each_audited_topic_to_its_own_table() -> None:
    specs = {s.name: s for s in load_topics("acme").values()}
    worker = ConnectWorker(Path("/w"), "127.0.0.1:9092", "acme", PRINCIPAL)
    sink = registry_sink("acme", Path("/wh"), 3.0)
    config = sink.config(worker)
    topics = config["topics"].split(",")
    assert topics == ["acme.tenants", "acme.tools.catalog", "acme.control"]
    assert all(CONNECT in specs[t].readers for t in topics)  # the broker lets the worker read them
    assert config["iceberg.tables"] == "audit.tenants,audit.tools,audit.controls"
    # Each row carries its topic and record time; the topic picks the table, exactly (dots literal).
    assert config["transforms.stamp.topic.field"] == config["iceberg.tables.route-field"] == TOPIC_FIELD
    assert config["transforms.stamp.timestamp.field"] == "record_time"
    routes = {t: config[f"iceberg.table.{t}.route-regex"] for t in config["iceberg.tables"].split(",")}
    assert {t: r.removeprefix("\\Q").removesuffix("\\E") for t, r in routes.items()} == dict(
        zip(config["iceberg.tables"].split(","), topics, strict=True)
    )
    assert all(r.startswith("\\Q") and r.endswith("\\E") for r in routes.values())
    # Partitioned by day, and by tenant where the topic has one (a tool's owner is its tenant).
    assert config["iceberg.table.audit.tenants.partition-by"] == "day(record_time),tenant_id"
    assert config["iceberg.table.audit.tools.partition-by"] == "day(record_time),owner"
    assert config["iceberg.table.audit.controls.partition-by"] == "day(record_time),tenant_id"
    # Key hashes and tool transports are dropped before a record reaches the sink; poison aside.
    assert set(config["value.converter.drop.fields"].split(",")) == {"key_hash", "transport_json"}
    dlq = specs[config["errors.deadletterqueue.topic.name"]]
    assert dlq.name == registry_dlq("acme") and CONNECT in dlq.writers and "admin-cli" in dlq.readers
    assert config["errors.tolerance"] == "all"
    # The same catalog, by name, as the journal's sink and pyiceberg; its namespace made up front.
    journal = journal_sink("acme", Path("/wh"), 3.0)
    assert config["iceberg.catalog"] == journal.config(worker)["iceberg.catalog"] == CATALOG_NAME
    assert sink.namespaces == journal.namespaces == {"audit"}
    assert config["iceberg.connect.group-id"] != journal.config(worker)["iceberg.connect.group-id"]


def test_the_warehouse_registers_both_sinks_on_one_warehouse(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AGENTSTREAM_WAREHOUSE_DIR", str(tmp_path / "wh"))
    monkeypatch.setenv("AGENTSTREAM_WAREHOUSE_FORMAT", "avro")
    settings = Settings.from_env()
    sinks = warehouse_sinks(settings, load(WarehouseSettings))
    assert [s.name for s in sinks] == [JOURNAL_CONNECTOR, REGISTRY_CONNECTOR]
    assert {s.warehouse for s in sinks} == {tmp_path / "wh"}
    worker = ConnectWorker(Path("/w"), "127.0.0.1:9092", "acme", PRINCIPAL)
    assert {s.config(worker)["iceberg.tables.auto-create-props.write.format.default"] for s in sinks} == {"avro"}


async def test_the_namespace_and_the_registry_tables_are_created_up_front_once(tmp_path: Path) -> None:
    from pyiceberg.catalog.sql import SqlCatalog

    tables = tuple(TABLES.values())
    created = await ensure_catalog(tmp_path / "wh", {"audit"}, tables, {"write.format.default": "avro"})
    assert created == ["audit", "audit.tenants", "audit.tools", "audit.controls"]
    assert await ensure_catalog(tmp_path / "wh", {"audit"}, tables) == []  # all there: nothing to do
    catalog = SqlCatalog(CATALOG_NAME, uri=f"sqlite:///{tmp_path / 'wh' / 'catalog.db'}")
    assert catalog.list_namespaces() == [("audit",)]
    controls = catalog.load_table("audit.controls")
    # Partitioned whatever the first record is (a tool switch has no tenant_id); the sink adds columns.
    assert [(f.name, str(f.transform)) for f in controls.spec().fields] == [
        ("record_time_day", "day"), ("tenant_id", "identity")
    ]  # fmt: skip
    assert {f.name for f in controls.schema().fields} == {"event_id", "event_type", "topic", "tenant_id", "record_time"}
    assert str(controls.schema().find_field("record_time").field_type) == "timestamptz"  # as the SMT's timestamp
    assert controls.properties["write.format.default"] == "avro"
    assert [f.name for f in catalog.load_table("audit.tools").spec().fields] == ["record_time_day", "owner"]
    catalog.engine.dispose()
    # The catalog's table has the layout the Java JdbcCatalog's V1 expects (its iceberg_type column).
    with sqlite3.connect(tmp_path / "wh" / "catalog.db") as db:
        assert "iceberg_type" in {row[1] for row in db.execute("PRAGMA table_info(iceberg_tables)")}
