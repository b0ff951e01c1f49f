"""The journal into the audit warehouse, on the real stack: 50 agent runs (every core, the scripted
model, real tools) land in ONE Iceberg events table through a real Connect worker running the
platform's converter, every journal event exactly once even though the worker is SIGKILLed and
restarted mid-stream; the runs' capability tokens and delegations, and the tenant secret one run's
tool received (`secrets put`, in plain, base64 or hex), are in no warehouse file; records
the converter cannot read go to the dead-letter topic with the reason and block nothing.

One worker for the module: a worker start and the converter's build are the slow parts."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from secrets import token_urlsafe
from typing import Any

import fastavro
import pytest
from confluent_kafka import Message, Producer

from agentstream.client.journal import RunRequest
from agentstream.codec import AvroCodec
from agentstream.config import Settings
from agentstream.connect.journal import EVENTS_TABLE, dlq_topic, journal_sink, read_topic
from agentstream.connect.sink import IcebergSink
from agentstream.connect.tables import metadata_location, table_rows
from agentstream.connect.worker import ConnectWorker
from agentstream.credentials.keys import local_key_provider
from agentstream.credentials.store import put_secret
from agentstream.events import ApprovalDecided, RunCompleted, ToolCallAuthorized
from agentstream.kafka.auth import ADMIN, CONNECT, CREDENTIALS_DIR_ENV, SASL_FILE_ENV, CredentialStore
from agentstream.kafka.producer import producer_config
from agentstream.localkafka import free_port
from agentstream.registry.admin import register_tool
from agentstream.registry.entry import TenantPolicy, ToolEntry
from agentstream.stack import AUTO_APPROVE_DEMO, LAYOUT_ENV, Deployment
from agentstream.tenancy.admin import create_tenant
from tests import conftest
from tests.harness import isolated_settings

pytestmark = pytest.mark.timeout(600)
NAMESPACE, TABLE = EVENTS_TABLE.split(".")
RUNS = 50
CRM_SERVER = Path(__file__).parents[1] / "fixtures" / "credential_server.py"
LOOKUP = {"tool_calls": [{"name": "crm_lookup", "arguments": {"customer": "ACME"}}]}
SCENARIOS: dict[str, dict[str, Any]] = {"crm": {"turns": [LOOKUP, {"text": "ACME is active"}]}}


@dataclass
class Warehouse:
    settings: Settings
    broker: conftest.TestBroker
    worker: ConnectWorker
    sink: IcebergSink
    env: dict[str, str]
    scenarios: Path

    @property
    def catalog(self) -> Path:
        return self.sink.warehouse / "catalog.db"

    def rows(self) -> list[dict[str, Any]]:
        return table_rows(self.catalog, NAMESPACE, TABLE)

    async def landed(self, expected: int, timeout_s: float = 120.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        rows = self.rows()
        while len(rows) < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            rows = self.rows()
        return rows

    async def cli(self, *args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agentstream.cli.main", "connect", *args, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode()

    async def status(self) -> dict[str, Any]:
        code, out = await self.cli("status")
        assert code == 0, out
        report: dict[str, Any] = json.loads(out)
        return report


@pytest.fixture(scope="module")
async def warehouse(
    kafka_broker: conftest.TestBroker, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Warehouse]:
    """`agentstream connect start` with the warehouse enabled: it builds the converter, starts the
    worker and registers the journal's sink (Avro data files: the test reads them with fastavro)."""
    if kafka_broker.credentials_dir is None:
        pytest.skip("needs the worker principal's credentials (the embedded broker's store)")
    settings, scenarios = await isolated_settings(
        kafka_broker.bootstrap, tmp_path_factory.mktemp("wj"), "wj", SCENARIOS
    )
    port = free_port()
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap, "AGENTSTREAM_HOME": str(settings.home),
           "AGENTSTREAM_TOPIC_PREFIX": settings.topic_prefix, "AGENTSTREAM_CONNECT_PORT": str(port),
           CREDENTIALS_DIR_ENV: str(kafka_broker.credentials_dir),
           SASL_FILE_ENV: str(kafka_broker.credentials_dir / f"{ADMIN}.json"),
           "AGENTSTREAM_WAREHOUSE": "true", "AGENTSTREAM_WAREHOUSE_FORMAT": "avro",
           "AGENTSTREAM_WAREHOUSE_COMMIT_INTERVAL_S": "2"}  # fmt: skip
    # The same worker as the CLI's (its data folder, pid file and plugins), for the test to crash.
    principal = CredentialStore(kafka_broker.credentials_dir).ensure(CONNECT)
    worker = ConnectWorker(settings.home / "connect", kafka_broker.bootstrap, settings.topic_prefix, principal,
                           port=port, plugin_dirs=(settings.home / "connect" / "plugins",))  # fmt: skip
    wh = Warehouse(
        settings,
        kafka_broker,
        worker,
        journal_sink(settings.topic_prefix, settings.home / "warehouse", 2),
        env,
        scenarios,
    )
    try:
        code, out = await wh.cli("start")
        assert code == 0 and f"journal sink journal running: {settings.topic_prefix}.runs.journal" in out, out
        status = await wh.status()
        assert [t["state"] for t in status["connectors"]["journal"]["tasks"]] == ["RUNNING"]
        assert status["journal_dead_letters"] == {"topic": dlq_topic(settings.topic_prefix), "records": 0}
        yield wh
    finally:
        await worker.stop()


async def _tenant_secret(settings: Settings) -> tuple[str, asyncio.Server]:
    """Tenant acme's secret (`secrets put`) and the MCP tool that needs it (tests/fixtures), which
    reports what it received through a unix socket (the sandbox lets it write no file we see)."""
    secret = "crm-" + token_urlsafe(24)
    # Beside the platform's home, not in it: the sandbox hides the home (its keys) from tools.
    received = settings.home.parent / "received-token"

    async def receive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.write_bytes(await reader.read())
        writer.close()

    sock = settings.home.parent / "probe.sock"
    probe = await asyncio.start_unix_server(receive, sock)
    sock.chmod(0o777)
    await create_tenant(settings, "acme", "Acme")
    await put_secret(settings, local_key_provider(settings), "acme", "crm_token", secret, ["crm_lookup"], ["crm:read"])
    schema = {"type": "object", "properties": {"customer": {"type": "string"}}, "required": ["customer"]}
    transport = {"kind": "stdio", "server": "crm", "command": sys.executable, "args": [str(CRM_SERVER), str(sock)]}
    await register_tool(settings, ToolEntry(name="crm_lookup", description="CRM lookup", input_schema=schema,
                        tier="read_only", transport=transport, scopes=("crm:read",), secrets=("crm_token",)))  # fmt: skip
    return secret, probe


def _forms(secret: str) -> list[bytes]:
    raw = secret.encode()
    return [raw, base64.b64encode(raw), base64.urlsafe_b64encode(raw), raw.hex().encode()]


def _key(msg: Message) -> str:
    return (msg.key() or b"").decode()


def _secrets_of(events: list[Any]) -> set[str]:
    """The credentials the runs carried: capability tokens, delegations, approvals' HMACs."""
    found: set[str] = set()
    for event in events:
        if isinstance(event, ToolCallAuthorized):
            found |= {event.capability, event.delegation}
        elif isinstance(event, ApprovalDecided):
            found.add(event.signature)
    return {s for s in found if len(s) >= 16}


def _contents(root: Path) -> list[bytes]:
    """Every file the warehouse holds (data, manifests, metadata, the catalog): Avro files decoded
    (whatever their compression), the others as they are."""
    out: list[bytes] = []
    for path in (p for p in root.rglob("*") if p.is_file()):
        out.append(path.read_bytes())
        if path.suffix == ".avro":
            try:
                with path.open("rb") as fh:
                    out.append(repr(list(fastavro.reader(fh))).encode())
            except EOFError:
                pass  # a data file a task is still writing: no table lists it yet
    return out


async def test_fifty_runs_land_once_across_a_worker_crash_without_credentials(warehouse: Warehouse) -> None:
    wh = warehouse
    secret, probe = await _tenant_secret(wh.settings)
    policies = {**AUTO_APPROVE_DEMO, "acme": TenantPolicy()}
    async with Deployment(wh.settings, [wh.scenarios], policies=policies, extra_env={LAYOUT_ENV: "engine"}) as d:
        run_ids = [await d.client.request_run(RunRequest(task=f"[scenario:demo] r{i}",
                   tools=["calculator", "get_current_time", "transfer_funds"])) for i in range(RUNS)]  # fmt: skip
        # One run uses a tenant secret: released to its tool by a delegation, echoed back by the tool.
        run_ids.append(await d.client.request_run(
            RunRequest(task="[scenario:crm] is ACME active?", tools=["crm_lookup"], tenant_id="acme")
        ))  # fmt: skip
        # Mid-stream: once the first rows are in the table, a crash (no leave, no flush, no commit).
        await wh.landed(1)
        await wh.worker.kill()
        restarted_in = await wh.worker.start()
        ends = [[e.event async for e in d.client.follow(run_id, timeout_s=120)][-1] for run_id in run_ids]
    probe.close()
    assert all(isinstance(end, RunCompleted) for end in ends), Counter(type(e).__name__ for e in ends)
    assert (wh.settings.home.parent / "received-token").read_text() == secret  # the tool did get it

    journal = read_topic(wh.broker.bootstrap, wh.broker.admin, f"{wh.settings.topic_prefix}.runs.journal")
    ids = Counter(_key(msg) for msg in journal)
    began = time.monotonic()
    rows = await wh.landed(len(journal), timeout_s=180)
    landed_in = time.monotonic() - began
    await asyncio.sleep(5.0)  # two more commit intervals: a duplicate would show by now
    rows = wh.rows()
    assert Counter(str(r["event_id"]) for r in rows) == ids, "an event is missing or landed twice"
    codec = AvroCodec()
    events = [codec.decode(msg.value()) for msg in journal]
    row = next(r for r in rows if r["event_type"] == "ToolCallAuthorized")
    authorized = codec.decode(next(m.value() for m in journal if _key(m) == row["event_id"]))
    assert isinstance(authorized, ToolCallAuthorized)
    assert (
        row["run_id"] == authorized.run_id
        and row["tenant_id"] == authorized.tenant_id
        and row["tool"] == authorized.tool
    )
    assert "capability" not in row and "delegation" not in row
    assert row["journal_time"] is not None  # the journal's append time

    # Partitioned by day and tenant, declared when the sink created the table.
    meta = json.loads(Path(str(metadata_location(wh.catalog, NAMESPACE, TABLE)).removeprefix("file:")).read_text())
    spec = next(s for s in meta["partition-specs"] if s["spec-id"] == meta["default-spec-id"])
    assert [(f["name"], f["transform"]) for f in spec["fields"]] == [
        ("journal_time_day", "day"), ("tenant_id", "identity")
    ]  # fmt: skip

    # No credential in any file the warehouse holds; an event id (not secret) is found the same way.
    secrets = _secrets_of(events)
    assert secrets, "the demo runs authorize tool calls: their capabilities must be scanned for"
    blobs = _contents(wh.sink.warehouse)
    leaked = {s for s in secrets for blob in blobs if s.encode() in blob}
    assert not leaked, f"{len(leaked)} credentials reached the warehouse"
    assert not any(form in blob for form in _forms(secret) for blob in blobs), "the tenant secret reached it"
    assert any(str(row["event_id"]).encode() in blob for blob in blobs)
    print(f"\n{RUNS} runs, {len(journal)} journal events; worker restarted after SIGKILL in {restarted_in:.1f}s; "
          f"all landed {landed_in:.1f}s after the runs ended; {len(secrets)} credentials absent")  # fmt: skip


async def test_poison_records_go_to_the_dead_letter_topic_and_block_nothing(warehouse: Warehouse) -> None:
    wh = warehouse
    codec = AvroCodec()
    before = len(wh.rows())
    good = [{"event_id": f"poison-test-{i}", "run_id": "run-poison", "tenant_id": "acme", "steps": i,
             "reason": "test"} for i in range(2)]  # fmt: skip
    whole = codec.encode_record("RunCancelled", good[0])
    unknown = b"\xc3\x01" + b"\x01" * 8 + whole[10:]  # a writer schema no .avsc has
    truncated = codec.encode_record("RunCancelled", good[1])[:-3]
    producer = Producer(producer_config(wh.broker.bootstrap, wh.broker.admin))
    topic = f"{wh.settings.topic_prefix}.runs.journal"
    # One partition (one key), in this order: the poison sits between the good records.
    for key, value in ((b"poison", whole), (b"poison", unknown), (b"poison", truncated),
                       (b"poison", codec.encode_record("RunCancelled", {**good[1], "event_id": "poison-test-after"}))):  # fmt: skip
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0
    rows = await wh.landed(before + 2)
    assert {"poison-test-0", "poison-test-after"} <= {str(r["event_id"]) for r in rows}
    dead = read_topic(wh.broker.bootstrap, wh.broker.admin, dlq_topic(wh.settings.topic_prefix))
    assert [msg.value() for msg in dead] == [unknown, truncated]  # as they were, in order
    reasons = [str(dict(msg.headers() or [])["__connect.errors.exception.message"]) for msg in dead]
    assert "unknown writer schema fingerprint" in reasons[0], reasons[0]
    assert "truncated or corrupt RunCancelled" in reasons[1], reasons[1]
    status = await wh.status()  # reported, and the task still runs
    assert status["journal_dead_letters"]["records"] == 2
    assert [t["state"] for t in status["connectors"]["journal"]["tasks"]] == ["RUNNING"]
