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
import datetime as dt
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
import httpx
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from confluent_kafka import OFFSET_END, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import NoSuchTableError

from agentstream.audit import run_history, run_query
from agentstream.audit.named import render
from agentstream.audit.warehouse import Warehouse as AuditTables
from agentstream.audit.warehouse import equal
from agentstream.budgets.controls import set_kill_switch, set_tenant_budget
from agentstream.client.http import RunsClient
from agentstream.client.journal import RunRequest
from agentstream.codec import AvroCodec
from agentstream.config import Settings
from agentstream.connect.journal import EVENTS_TABLE, dlq_topic, journal_sink, read_topic
from agentstream.connect.registry import dlq_topic as registry_dlq
from agentstream.connect.sink import CATALOG_NAME, IcebergSink
from agentstream.connect.tables import table_rows
from agentstream.connect.worker import ConnectWorker
from agentstream.credentials.keys import local_key_provider
from agentstream.credentials.store import put_secret
from agentstream.events import (
    ApprovalDecided,
    BudgetSettled,
    RunCompleted,
    RunEvent,
    ToolCallAuthorized,
    ToolCallRequested,
)
from agentstream.gateway.service import running_gateway
from agentstream.kafka.auth import ADMIN, CONNECT, CREDENTIALS_DIR_ENV, SASL_FILE_ENV, CredentialStore
from agentstream.kafka.producer import producer_config
from agentstream.localkafka import free_port
from agentstream.registry.admin import register_tool, switch_tool
from agentstream.registry.entry import TenantPolicy, ToolEntry
from agentstream.stack import AUTO_APPROVE_DEMO, LAYOUT_ENV, Deployment
from agentstream.tenancy.admin import create_tenant, issue_key, list_keys, revoke_key
from agentstream.tenancy.keys import hash_secret
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
        """The events table's rows, read by the audit reader (pyiceberg, Parquet) as an operator."""
        if not self.catalog.exists():
            return []
        tables = AuditTables(self.sink.warehouse)
        if TABLE not in tables.table_names():
            return []
        rows: list[dict[str, Any]] = tables.scan(TABLE).to_pylist()
        return [{k: v for k, v in row.items() if v is not None} for row in rows]

    async def landed(self, expected: int, timeout_s: float = 120.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        rows = self.rows()
        while len(rows) < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            rows = self.rows()
        return rows

    async def cli(self, *args: str) -> tuple[int, str]:
        """`agentstream connect ...`: exit code and stdout (librdkafka's log lines go to stderr,
        shown when the command fails)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agentstream.cli.main", "connect", *args, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        return proc.returncode or 0, out.decode() if proc.returncode == 0 else out.decode() + err.decode()

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
    worker and registers the journal's sink (Parquet data files: the test reads them with the audit reader)."""
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
           "AGENTSTREAM_WAREHOUSE": "true", "AGENTSTREAM_WAREHOUSE_FORMAT": "parquet",
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
        assert code == 0 and f"journal sink running: {settings.topic_prefix}.runs.journal" in out, out
        # The registry's sink too (tenants, tools.catalog, control), in the namespace made up front.
        assert f"registry sink running: {settings.topic_prefix}.tenants," in out, out
        status = await wh.status()
        assert [t["state"] for t in status["connectors"]["journal"]["tasks"]] == ["RUNNING"]
        assert [t["state"] for t in status["connectors"]["registry"]["tasks"]] == ["RUNNING"]
        assert status["dead_letters"] == {
            "journal": {"topic": dlq_topic(settings.topic_prefix), "records": 0},
            "registry": {"topic": registry_dlq(settings.topic_prefix), "records": 0},
        }
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
    """Every file the warehouse holds (data, manifests, metadata, the catalog) as it is, and Avro
    and Parquet files decoded too (their values are compressed in the raw bytes); then every cell
    of every table as the audit reader decodes it."""
    out: list[bytes] = []
    for path in (p for p in root.rglob("*") if p.is_file()):
        out.append(path.read_bytes())
        try:
            if path.suffix == ".avro":
                with path.open("rb") as fh:
                    out.append(repr(list(fastavro.reader(fh))).encode())
            elif path.suffix == ".parquet":
                out.append(repr(pq.read_table(path).to_pylist()).encode())
        except (EOFError, OSError, ValueError):  # pyarrow's ArrowInvalid is a ValueError
            # A data file a task is still writing, or one a SIGKILLed worker left empty: no table
            # lists it (its raw bytes above are still searched; every listed row is decoded below).
            pass
    if (root / "catalog.db").exists():
        tables = AuditTables(root)
        out.extend(repr(tables.scan(name).to_pylist()).encode() for name in tables.table_names())
    return out


async def _queries_match_the_journal(wh: Warehouse, journal: list[Message], run_ids: list[str]) -> None:
    """The views and the documented queries over the connector-written tables agree with the journal."""
    codec = AvroCodec()
    events = [codec.decode(msg.value()) for msg in journal]
    kinds = Counter(type(e).__name__ for e in events)
    root = wh.sink.warehouse

    async def one(sql: str, tenant: str | None = None) -> Any:
        return (await run_query(root, sql, tenant_id=tenant)).rows[0][0]

    assert await one("SELECT count(*) FROM runs") == len(run_ids) == RUNS + 1
    assert await one("SELECT count(*) FROM runs WHERE status = 'completed'") == RUNS + 1
    assert await one("SELECT count(*) FROM model_calls") == kinds["LlmCallRequested"]
    assert await one("SELECT count(*) FROM model_calls WHERE status = 'completed'") == kinds["LlmCallCompleted"]
    assert await one("SELECT count(*) FROM tool_calls") == kinds["ToolCallRequested"]
    assert await one("SELECT count(*) FROM approvals") == kinds["ApprovalRequested"]
    assert await one("SELECT count(*) FROM costs") == kinds["BudgetSettled"]
    # Cost per tenant per UTC day: the BudgetSettled events of the journal, by their append time.
    expected: dict[tuple[str, str], float] = {}
    for msg, event in zip(journal, events, strict=True):
        if isinstance(event, BudgetSettled):
            day = dt.datetime.fromtimestamp(msg.timestamp()[1] / 1000, dt.UTC).date().isoformat()
            expected[(day, event.tenant_id)] = expected.get((day, event.tenant_id), 0.0) + event.cost_usd
    daily = await run_query(root, render("cost-per-tenant-per-day", {}), tenant_id=None)
    got = {(row[0], row[1]): row[2] for row in daily.rows}
    assert got.keys() == expected.keys() and all(got[k] == pytest.approx(v, abs=1e-5) for k, v in expected.items())
    # Every irreversible call of the week (transfer_funds, auto-approved by the demo policy).
    week = await run_query(root, render("irreversible-approvals", {}), tenant_id=None)
    transfers = sum(1 for e in events if isinstance(e, ToolCallRequested) and e.tool == "transfer_funds")
    assert transfers and len(week.rows) == transfers
    # Flagged runs: the demo runs' tasks ("r3") hold none of the amounts the scripted demo pays,
    # so the step checks flag them (grounding): the query finds exactly the journal's flagged runs.
    flagged = {e.run_id for e in events
               if isinstance(e, RunEvent) and e.type_name in ("EvalVerdict", "RunFlagged", "LoopDetected")}  # fmt: skip
    found = await run_query(root, render("flagged-runs", {}), tenant_id=None)
    assert flagged and {row[found.columns.index("run_id")] for row in found.rows} == flagged
    # One run's full history, in journal order: the named query and the API agree with the journal.
    run_id = run_ids[0]
    in_journal = [_key(m) for m in journal if codec.decode(m.value()).run_id == run_id]  # type: ignore[attr-defined]
    named = await run_query(root, render("run-history", {"run_id": run_id}), tenant_id="default")
    assert sorted(r[named.columns.index("event_id")] for r in named.rows) == sorted(in_journal)
    assert [e["event_id"] for e in await run_history(root, run_id, tenant_id="default")] == in_journal
    # Tenant isolation on the connector's tables: acme's one run, and nothing of it for `default`.
    assert await one("SELECT count(*) FROM runs", "acme") == 1
    assert await one("SELECT count(*) FROM events WHERE tenant_id = 'acme'", "default") == 0
    assert await one("SELECT count(*) FROM events", "nobody") == 0
    assert await run_history(root, run_ids[-1], tenant_id="default") == []


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
    spec = AuditTables(wh.sink.warehouse).table(TABLE).spec()
    assert [(f.name, str(f.transform)) for f in spec.fields] == [("journal_time_day", "day"), ("tenant_id", "identity")]
    await _queries_match_the_journal(wh, journal, run_ids)

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
    assert status["dead_letters"]["journal"]["records"] == 2
    assert [t["state"] for t in status["connectors"]["journal"]["tasks"]] == ["RUNNING"]


def _registry_rows(wh: Warehouse, table: str) -> list[dict[str, Any]]:
    """Every row of one of the registry sink's tables (none before it exists): by pyiceberg, which
    reads Parquet data files only, or by the Avro reader when the fixture writes Avro."""
    if wh.env.get("AGENTSTREAM_WAREHOUSE_FORMAT") == "avro":
        return table_rows(wh.catalog, *table.split("."))
    catalog = SqlCatalog(CATALOG_NAME, uri=f"sqlite:///{wh.catalog}")
    try:
        return [dict(row) for row in catalog.load_table(table).scan().to_arrow().to_pylist()]
    except NoSuchTableError:
        return []
    finally:
        catalog.engine.dispose()


async def test_tenants_tools_and_controls_land_in_their_tables_without_key_hashes(warehouse: Warehouse) -> None:
    wh = warehouse
    prefix = wh.settings.topic_prefix
    # A compacted topic's deletion first: the sink must take it in its stride (no row, no failure).
    producer = Producer(producer_config(wh.broker.bootstrap, wh.broker.admin))
    producer.produce(f"{prefix}.tenants", key=b"tenant/ghost", value=None)
    assert producer.flush(30) == 0
    await create_tenant(wh.settings, "zeta", "Zeta")
    plaintext = await issue_key(wh.settings, "zeta", label="auditor")
    key_id = next(k.key_id for k in await list_keys(wh.settings, "zeta"))
    await revoke_key(wh.settings, key_id)
    # A secret VALUE in a tool's transport (a stdio server's env): the transport is never sunk.
    token = "tok-" + token_urlsafe(24)
    transport = {"kind": "stdio", "server": "audited", "command": "/bin/true", "env": {"AUDITED_TOKEN": token}}
    await register_tool(wh.settings, ToolEntry(name="audited_tool", description="audited", tier="read_only",
                        input_schema={"type": "object"}, transport=transport, owner="zeta",
                        secrets=("crm_token",)))  # fmt: skip
    await switch_tool(wh.settings, "zeta", "audited_tool", disabled=True, reason="audit test", by="test")
    await set_tenant_budget(wh.settings, "zeta", usd_per_day=12.5, max_active_runs=3, set_by="test")
    await set_kill_switch(wh.settings, "tenant", "zeta", engaged=True, reason="audit test", set_by="test")
    expected = {
        "audit.tenants": {("TenantUpserted", "tenant/zeta"), ("ApiKeyIssued", f"key/{key_id}"),
                          ("ApiKeyRevoked", f"key/{key_id}")},
        "audit.tools": {("ToolRegistered", "tool/zeta/audited_tool/1")},
        "audit.controls": {("ToolSwitched", "tool/zeta/audited_tool"), ("TenantBudgetSet", "budget/zeta"),
                           ("KillSwitchSet", "kill/tenant/zeta")},
    }  # fmt: skip
    tables: dict[str, list[dict[str, Any]]] = {}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        tables = {t: await asyncio.to_thread(_registry_rows, wh, t) for t in expected}
        if all(want <= {(r["event_type"], r["event_id"]) for r in tables[t]} for t, want in expected.items()):
            break
        await asyncio.sleep(1.0)
    for table, want in expected.items():
        assert want <= {(r["event_type"], r["event_id"]) for r in tables[table]}, (table, tables[table])
    issued = next(r for r in tables["audit.tenants"] if r["event_type"] == "ApiKeyIssued")
    assert issued["tenant_id"] == "zeta" and issued["label"] == "auditor" and "key_hash" not in issued
    assert issued["topic"] == f"{prefix}.tenants" and issued["record_time"] is not None
    tool = next(r for r in tables["audit.tools"] if r["event_id"] == "tool/zeta/audited_tool/1")
    assert "transport_json" not in tool and tool["secrets"] == ["crm_token"] and tool["source"] == "stdio:audited"
    budget = next(r for r in tables["audit.controls"] if r["event_type"] == "TenantBudgetSet")
    assert (budget["tenant_id"], budget["usd_per_day"], budget["max_active_runs"]) == ("zeta", 12.5, 3)
    # Partitioned by day and by the topic's tenant, as declared when the sink created each table.
    catalog = SqlCatalog(CATALOG_NAME, uri=f"sqlite:///{wh.catalog}")
    specs = {t: [(f.name, str(f.transform)) for f in catalog.load_table(t).spec().fields] for t in expected}
    catalog.engine.dispose()
    assert specs == {
        "audit.tenants": [("record_time_day", "day"), ("tenant_id", "identity")],
        "audit.tools": [("record_time_day", "day"), ("owner", "identity")],
        "audit.controls": [("record_time_day", "day"), ("tenant_id", "identity")],
    }
    # Neither the key, its hash nor the tool's token anywhere: decoded rows, and every file.
    decoded = repr(tables).encode()
    blobs = [decoded, *_contents(wh.sink.warehouse)]
    for needle in (plaintext, hash_secret(plaintext), token):
        assert not any(form in blob for form in _forms(needle) for blob in blobs), "a credential reached the warehouse"
    assert key_id.encode() in decoded
    # The tombstone was no poison: nothing set aside, and the task still runs.
    status = await wh.status()
    assert status["dead_letters"]["registry"]["records"] == 0
    assert [t["state"] for t in status["connectors"]["registry"]["tasks"]] == ["RUNNING"]


async def _agentstream(wh: Warehouse, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agentstream.cli.main", *args, env=wh.env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


def _delete_head(admin: AdminClient, partition: TopicPartition) -> None:
    """DeleteRecords up to `partition`'s offset. The broker applies a topic's new cleanup policy
    when it reads the config record from the metadata log, a moment after AlterConfigs answers:
    until then it refuses with POLICY_VIOLATION, so that one refusal is retried for a while."""
    deadline = time.monotonic() + 30
    while True:
        try:
            for future in admin.delete_records([partition]).values():
                future.result(30)
            return
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.POLICY_VIOLATION or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


async def test_a_run_gone_from_the_journal_is_read_back_from_the_warehouse(warehouse: Warehouse) -> None:
    """Retention (here: the run's journal partition deleted up to its end, as a retention pass
    would) takes a finished run out of the hot journal; `runs show` and the gateway read it back
    from the warehouse, a key sees its own tenant's runs only, and audit SQL through the gateway is
    scoped to the key's tenant and needs `audit:read`."""
    wh = warehouse
    rows = wh.rows()
    done = next(r for r in rows if r["event_type"] == "RunCompleted" and r["tenant_id"] == "acme")
    run_id, partition = str(done["run_id"]), int(done["journal_partition"])
    run_rows = sorted(str(r["event_id"]) for r in rows if r["run_id"] == run_id)
    topic = f"{wh.settings.topic_prefix}.runs.journal"
    admin = AdminClient({"bootstrap.servers": wh.broker.bootstrap, "log_level": "0", **wh.broker.admin})
    # As an operator bounds the journal once the warehouse keeps its history (docs/runs-and-journal.md):
    # a compacted topic refuses DeleteRecords, a compact,delete one lets retention (or this) cut its head.
    policy = ConfigEntry("cleanup.policy", "compact,delete", incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[policy])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)
    _delete_head(admin, TopicPartition(topic, partition, OFFSET_END))
    assert not [m for m in read_topic(wh.broker.bootstrap, wh.broker.admin, topic) if _key(m).startswith(run_id)]

    code, out, err = await _agentstream(wh, "runs", "show", run_id, "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["source"] == "audit warehouse" and shown["summary"]["status"] == "completed", shown["summary"]
    assert sorted(e["event_id"] for e in shown["events"]) == run_rows

    await create_tenant(wh.settings, "globex", "Globex")
    auditor = await issue_key(wh.settings, "acme", "auditor", scopes=["runs:read", "audit:read"])
    runner = await issue_key(wh.settings, "acme", "runner")
    stranger = await issue_key(wh.settings, "globex", "auditor", scopes=["runs:read", "audit:read"])
    count = "SELECT count(*) AS n FROM events"
    async with running_gateway(wh.settings, port=0) as url, httpx.AsyncClient(base_url=url, timeout=60) as http:
        got = await http.get(f"/v1/runs/{run_id}", headers=_bearer(auditor))
        assert got.status_code == 200 and got.json()["status"] == "completed", got.text
        async with RunsClient(url, auditor) as client:
            streamed = [m.event async for m in client.events(run_id)]
            # In journal order, ending with the terminal event (as for a run the journal holds:
            # a settlement journaled after the end is in `runs show`, not in the stream).
            ordered = [str(r["event_id"]) for r in sorted(rows, key=lambda r: int(r["journal_offset"]))
                       if r["run_id"] == run_id]  # fmt: skip
            until_end = ordered[: ordered.index(f"{run_id}/terminal") + 1]
            assert [e.event_id for e in streamed if isinstance(e, RunEvent)] == until_end
            mine = await client.audit_query(count)
        assert mine.rows == [[sum(1 for r in rows if r["tenant_id"] == "acme")]] and not mine.truncated
        assert (await http.get(f"/v1/runs/{run_id}", headers=_bearer(stranger))).status_code == 404
        theirs = await http.post("/v1/audit/query", headers=_bearer(stranger),
                                 json={"sql": "SELECT count(*) FROM events WHERE tenant_id = 'acme'"})  # fmt: skip
        assert theirs.status_code == 200 and theirs.json()["rows"] == [[0]], theirs.text
        refused = await http.post("/v1/audit/query", headers=_bearer(runner), json={"sql": count})
        assert refused.status_code == 403 and refused.json()["error"]["type"] == "missing_scope", refused.text
        sneaky = f"SELECT * FROM read_parquet('{wh.sink.warehouse}/**/*.parquet')"
        bad = await http.post("/v1/audit/query", headers=_bearer(auditor), json={"sql": sneaky})
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_query", bad.text
        assert str(wh.sink.warehouse) not in bad.text


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_retention_removes_one_tenants_rows_and_files_while_the_sink_goes_on(warehouse: Warehouse) -> None:
    """Last in the module: `audit retention` deletes acme's rows (and their files) from the table
    the connector keeps writing, which then lands the next record on top, once."""
    wh = warehouse
    before = Counter(str(r.get("tenant_id")) for r in wh.rows())
    assert before["acme"] > 0 and before["default"] > 0
    tables = AuditTables(wh.sink.warehouse)
    acme_scan = tables.table(TABLE).scan(row_filter=equal("tenant_id", "acme"))
    acme_files = [task.file.file_path for task in acme_scan.plan_files()]
    code, _, err = await _agentstream(wh, "audit", "retention", "set", "acme", "--days", "1")
    assert code == 0, err
    code, out, err = await _agentstream(wh, "audit", "retention", "show")
    assert code == 0 and "acme: 1" in out, (out, err)
    later = int(time.time() * 1000) + 3 * 86_400_000  # acme's rows are then 3 days old
    code, out, err = await _agentstream(wh, "audit", "retention", "apply", "--now-ms", str(later), "--json")
    assert code == 0, err
    applied = json.loads(out.strip().splitlines()[-1])
    report = next(r for r in applied["tables"] if r["table"] == TABLE)
    assert applied["blobs"] is not None  # the home's local blob store: the ended runs' scopes deleted
    assert report["rows_deleted"] == {"acme": before["acme"]} and report["files_removed"] >= len(acme_files)
    after = Counter(str(r.get("tenant_id")) for r in wh.rows())
    assert after["acme"] == 0 and dict(after) == {t: n for t, n in before.items() if t != "acme"}
    assert not any(Path(f.removeprefix("file:")).exists() for f in acme_files)
    # The sink goes on over the retention's snapshot (its committed offsets carried onto it).
    producer = Producer(producer_config(wh.broker.bootstrap, wh.broker.admin))
    record = {"event_id": "after-retention", "run_id": "run-retention", "tenant_id": "acme", "steps": 0,
              "reason": "test"}  # fmt: skip
    producer.produce(f"{wh.settings.topic_prefix}.runs.journal", key=b"after-retention",
                     value=AvroCodec().encode_record("RunCancelled", record))  # fmt: skip
    assert producer.flush(30) == 0
    rows = await wh.landed(sum(after.values()) + 1)
    await asyncio.sleep(4.0)  # two more commit intervals: a replayed batch would show by now
    assert Counter(str(r["event_id"]) for r in wh.rows())["after-retention"] == 1 and rows
    code, out, err = await _agentstream(wh, "audit", "sql", "SELECT event_id FROM events", "--tenant", "acme", "--json")
    assert code == 0 and json.loads(out)["rows"] == [["after-retention"]], (out, err)
    code, _, err = await _agentstream(wh, "audit", "sql", f"SELECT * FROM read_parquet('{wh.sink.warehouse}/**')")
    assert code == 2 and str(wh.sink.warehouse) not in err, err
