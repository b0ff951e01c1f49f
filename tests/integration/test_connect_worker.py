"""The audit warehouse's first slice against the real broker: a real Kafka Connect worker (Apache
Kafka's jars) in distributed mode, authenticated as its own principal, runs Iceberg's own sink,
which lands a JSON topic in an Iceberg table (local warehouse, SQLite JDBC catalog), each record
once, across a worker restart."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from agentstream.codec import AvroCodec
from agentstream.connect.jars import build_converter
from agentstream.connect.sink import IcebergSink
from agentstream.connect.tables import data_files, table_rows
from agentstream.connect.worker import ConnectWorker
from agentstream.kafka.acls import Grant
from agentstream.kafka.auth import ADMIN, CONNECT, CREDENTIALS_DIR_ENV, SASL_FILE_ENV, CredentialStore
from agentstream.kafka.producer import producer_config
from agentstream.localkafka import free_port
from agentstream.resources import resource_path
from agentstream.topics import TopicSpec, create_topics
from tests import conftest
from tests.harness import isolated_settings

pytestmark = pytest.mark.timeout(600)
Record = dict[str, object]


async def _sink_topic(broker: conftest.TestBroker, name: str) -> None:
    """A topic only the worker's principal may read (as topics.yaml grants a sunk topic)."""
    spec = TopicSpec(name, 2, 1, {"cleanup.policy": "delete"}, writers=("admin-cli",), readers=(CONNECT,))
    await create_topics(broker.bootstrap, [spec], broker.admin)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap, **broker.admin})
    grants = [Grant(CONNECT, "TOPIC", "LITERAL", name, op).binding() for op in ("READ", "DESCRIBE")]
    for fut in admin.create_acls(grants, request_timeout=30).values():
        fut.result()


def _produce(broker: conftest.TestBroker, topic: str, records: list[Record]) -> None:
    producer = Producer(producer_config(broker.bootstrap, broker.admin))
    for record in records:
        producer.produce(topic, key=str(record["id"]).encode(), value=orjson.dumps(record))
    assert producer.flush(30) == 0


async def _landed(warehouse: Path, expected: int, timeout_s: float = 120.0) -> tuple[list[Record], float]:
    """The table's rows once it holds `expected` (or the deadline passed), and how long that took."""
    began = time.monotonic()
    rows: list[Record] = []
    while time.monotonic() - began < timeout_s:
        rows = table_rows(warehouse / "catalog.db", "audit", "events")
        if len(rows) >= expected:
            break
        await asyncio.sleep(0.25)
    return rows, time.monotonic() - began


async def _parquet_count(warehouse: Path, expected: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sum(f["record_count"] for f in data_files(warehouse / "catalog.db", "audit_parquet", "events")) >= expected:
            return
        await asyncio.sleep(0.5)


def _batch(start: int, count: int) -> list[Record]:
    return [{"id": f"e{i}", "tenant": "acme", "kind": "step", "n": i} for i in range(start, start + count)]


def _assert_once(rows: list[Record], records: list[Record]) -> None:
    assert len(rows) == len(records), "a record is missing or landed twice"
    assert {(r["id"], r["tenant"], r["n"]) for r in rows} == {(r["id"], r["tenant"], r["n"]) for r in records}


async def test_json_topic_lands_once_in_an_iceberg_table(kafka_broker: conftest.TestBroker, tmp_path: Path) -> None:
    if kafka_broker.credentials_dir is None:
        pytest.skip("needs the worker principal's credentials (the embedded broker's store)")
    settings, _ = await isolated_settings(kafka_broker.bootstrap, tmp_path, "wh")
    topic = f"{settings.topic_prefix}.audit-test"
    await _sink_topic(kafka_broker, topic)
    principal = CredentialStore(kafka_broker.credentials_dir).ensure(CONNECT)
    worker = ConnectWorker(tmp_path / "connect", kafka_broker.bootstrap, settings.topic_prefix, principal,
                           port=free_port())  # fmt: skip
    warehouse = tmp_path / "warehouse"
    # Avro data files: the test reads them back with fastavro (Parquet, the default, needs a reader
    # the project does not ship yet).
    sink = IcebergSink("audit", (topic,), "audit.events", warehouse, commit_interval_s=2.0,
                       extra={"iceberg.tables.auto-create-props.write.format.default": "avro"})  # fmt: skip
    # The default format, Parquet, beside it: counted from the table's manifests. In a namespace of
    # its own: two tasks auto-creating one new namespace at once race in the JDBC catalog (SQLite's
    # primary-key error is not mapped to "already exists") and the loser's task fails for good.
    parquet = IcebergSink("audit-parquet", (topic,), "audit_parquet.events", warehouse, commit_interval_s=2.0)
    try:
        started_in = await worker.start()
        for connector in (sink, parquet):
            await connector.register(worker)
            await connector.wait_running(worker, timeout_s=120)
        sent = _batch(0, 20)
        _produce(kafka_broker, topic, sent)
        rows, first_s = await _landed(warehouse, len(sent))
        _assert_once(rows, sent)
        # The table exists now: the next batch shows the steady lag (about one commit interval).
        sent += _batch(20, 20)
        _produce(kafka_broker, topic, sent[20:])
        rows, steady_s = await _landed(warehouse, len(sent))
        _assert_once(rows, sent)
        # Both connectors caught up before the stop: a graceful stop that interrupts a coordinator's
        # commit (Iceberg 1.12.0 fails it with RejectedExecutionException while shutting down) left
        # that connector's later records unlanded in one run (docs/warehouse.md, Known issues).
        await _parquet_count(warehouse, len(sent))

        # A restart: the connector comes back from the worker's config topic (not registered again)
        # and resumes from the offsets committed with the table, so nothing lands twice.
        await worker.stop()
        restarted_in = await worker.start()
        await sink.wait_running(worker, timeout_s=120)
        sent += _batch(40, 20)
        _produce(kafka_broker, topic, sent[40:])
        rows, after_restart_s = await _landed(warehouse, len(sent))
        await asyncio.sleep(4.0)  # two more commit intervals: a duplicate would show by now
        _assert_once(table_rows(warehouse / "catalog.db", "audit", "events"), sent)
        # The Parquet connector commits on its own schedule (its task restarted too): waited for, not raced.
        await _parquet_count(warehouse, len(sent))
        files = data_files(warehouse / "catalog.db", "audit_parquet", "events")
        assert {f["file_format"] for f in files} == {"PARQUET"}
        assert sum(f["record_count"] for f in files) == len(sent)
        print(f"\nworker answered in {started_in:.1f}s (restart {restarted_in:.1f}s); 20 records visible in "
              f"{first_s:.1f}s (table created), then {steady_s:.1f}s, after restart {after_restart_s:.1f}s")  # fmt: skip
    finally:
        await worker.stop()
    assert worker.running_pid() is None


async def _cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agentstream.cli.main", "connect", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_connect_cli_starts_reports_and_stops_the_worker(
    kafka_broker: conftest.TestBroker, tmp_path: Path
) -> None:
    if kafka_broker.credentials_dir is None:
        pytest.skip("needs the worker principal's credentials (the embedded broker's store)")
    settings, _ = await isolated_settings(kafka_broker.bootstrap, tmp_path, "whcli")
    port = free_port()
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap, "AGENTSTREAM_HOME": str(tmp_path / "home"),
           "AGENTSTREAM_TOPIC_PREFIX": settings.topic_prefix, "AGENTSTREAM_CONNECT_PORT": str(port),
           CREDENTIALS_DIR_ENV: str(kafka_broker.credentials_dir),
           SASL_FILE_ENV: str(kafka_broker.credentials_dir / f"{ADMIN}.json")}  # fmt: skip
    try:
        code, out = await _cli(env, "start")
        assert code == 0, out
        assert f"answering at http://127.0.0.1:{port}" in out and f"group {settings.topic_prefix}.connect" in out
        code, out = await _cli(env, "status")
        assert code == 0, out
        # No sink registered (the warehouse is off): none to count dead letters for.
        assert json.loads(out) == {"worker": f"http://127.0.0.1:{port}", "connectors": {}, "dead_letters": {}}
    finally:
        code, out = await _cli(env, "stop")
    assert code == 0 and "stopped" in out, out
    code, out = await _cli(env, "status")
    assert code == 1 and "no Connect worker answering" in out


def _journal_record(schema: dict[str, Any], i: int) -> dict[str, Any]:
    """A record of the event's schema with a value of each field's type (the test needs bytes, not meaning)."""
    values: dict[str, Any] = {"string": None, "int": i, "long": 1000 + i, "double": i + 0.5, "boolean": i % 2 == 0,
                              "bytes": b"\x00\x01"}  # fmt: skip
    record: dict[str, Any] = {}
    for field in schema["fields"]:
        kind = field["type"]
        value = None if isinstance(kind, list) else values[kind]
        record[field["name"]] = f"{field['name']}-{i}" if kind == "string" else value
    return record


async def test_journal_events_land_typed_through_the_converter(
    kafka_broker: conftest.TestBroker, tmp_path: Path
) -> None:
    """Avro single-object journal values (written by the platform's own codec) read by the Java
    converter of connectors/ and landed by the Iceberg sink: one sparse events table, a column per
    field, each row carrying its event type."""
    if kafka_broker.credentials_dir is None:
        pytest.skip("needs the worker principal's credentials (the embedded broker's store)")
    settings, _ = await isolated_settings(kafka_broker.bootstrap, tmp_path, "whj")
    topic = f"{settings.topic_prefix}.journal-copy"
    await _sink_topic(kafka_broker, topic)
    plugins = await build_converter(Path(__file__).parents[2] / "connectors", tmp_path / "plugins")
    principal = CredentialStore(kafka_broker.credentials_dir).ensure(CONNECT)
    worker = ConnectWorker(tmp_path / "connect", kafka_broker.bootstrap, settings.topic_prefix, principal,
                           port=free_port(), plugin_dirs=(plugins,))  # fmt: skip
    schemas = resource_path("schemas")
    warehouse = tmp_path / "warehouse"
    sink = IcebergSink("journal", (topic,), "audit.journal", warehouse, commit_interval_s=2.0, extra={
        "value.converter": "dev.agentstream.connect.SingleObjectAvroConverter",
        "value.converter.schemas.dirs": f"{schemas},{schemas / 'history'}",
        # One table for every event type: a field another type lacks is null there.
        "iceberg.tables.schema-force-optional": "true",
        "iceberg.tables.auto-create-props.write.format.default": "avro",
    })  # fmt: skip
    codec = AvroCodec()
    types = ("ToolCallCompleted", "LlmCallFailed", "RunCancelled")
    sent: list[tuple[str, str]] = []
    producer = Producer(producer_config(kafka_broker.bootstrap, kafka_broker.admin))
    for i in range(30):
        name = types[i % len(types)]
        record = _journal_record(json.loads((schemas / f"{name}.avsc").read_text()), i)
        producer.produce(topic, key=record["event_id"].encode(), value=codec.encode_record(name, record))
        sent.append((name, record["event_id"]))
    assert producer.flush(30) == 0
    try:
        await worker.start()
        await sink.register(worker)
        await sink.wait_running(worker, timeout_s=120)
        began = time.monotonic()
        rows: list[Record] = []
        while time.monotonic() - began < 120 and len(rows) < len(sent):
            rows = table_rows(warehouse / "catalog.db", "audit", "journal")
            await asyncio.sleep(0.25)
    finally:
        await worker.stop()
    assert sorted((str(r["event_type"]), str(r["event_id"])) for r in rows) == sorted(sent)
    completed = next(r for r in rows if r["event_type"] == "ToolCallCompleted")
    assert isinstance(completed["duration_ms"], float) and isinstance(completed["step"], int)  # typed columns
    # A data file written before the table grew a column lacks it: a reader projects it as null.
    assert next(r for r in rows if r["event_type"] == "LlmCallFailed").get("duration_ms") is None
