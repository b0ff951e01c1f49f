"""Long-term memory against the real broker: the memory tool writes its index records to the
`memory` topic as the tool executor's principal, a restarted index reads the same files back, the
CLI lists and exports them as the operator, the gateway (as its own principal) lists and exports
them per API key, no tenant sees another's, and only the executor may write the topic."""

from __future__ import annotations

import argparse
import dataclasses
import stat
import time
from pathlib import Path

import httpx
import orjson
import pytest

from agentstream.blobs.factory import open_blob_store
from agentstream.cli.memory import memory_command
from agentstream.client import ApiError, RunsClient
from agentstream.config import Settings
from agentstream.events import MemoryFileSet
from agentstream.gateway.service import running_gateway
from agentstream.kafka.auth import CredentialStore
from agentstream.kafka.producer import AsyncProducer, producer_config
from agentstream.kafka.table import put_record
from agentstream.memory.admin import read_memory_index
from agentstream.memory.files import Caps, MemoryFiles
from agentstream.memory.index import MemoryIndex, memory_topic
from agentstream.processors.tool_executor.memory_tool import MemoryTool
from agentstream.tenancy.admin import create_tenant, issue_key
from bench.attacks import kafka as attacks

CAPS = Caps(max_file_bytes=1024, max_tenant_bytes=4096, max_files=10)


def as_component(settings: Settings, component: str) -> Settings:
    assert settings.kafka_credentials_dir is not None, "this test needs the local SASL broker"
    principal = CredentialStore(settings.kafka_credentials_dir).get(component)
    assert principal is not None
    return dataclasses.replace(settings, kafka_extra=principal.client_config())


async def test_memory_round_trip_restart_cli_and_isolation(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    executor = as_component(settings, "tool-executor")
    index = MemoryIndex(executor)
    await index.start()
    producer = AsyncProducer(producer_config(executor.bootstrap_servers, executor.kafka_extra))
    store = open_blob_store(settings)

    async def publish(event: MemoryFileSet) -> None:
        await put_record(executor, memory_topic(executor), event, producer)

    tool = MemoryTool(MemoryFiles(index, lambda: store, publish, CAPS, lambda: int(time.time() * 1000)))
    try:

        async def ok(tenant: str, **arguments: object) -> str:
            result = await tool.call("memory", dict(arguments), tenant=tenant, run_id="run_m1", timeout_s=30)
            assert not result.is_error, result.content
            return result.content

        await ok("acme", command="create", path="/memories/customers/dana.md", file_text="prefers email\n")
        await ok("acme", command="str_replace", path="/memories/customers/dana.md", old_str="email", new_str="phone")
        await ok("acme", command="create", path="/memories/old.md", file_text="stale")
        await ok("acme", command="rename", old_path="/memories/old.md", new_path="/memories/archive/old.md")
        await ok("globex", command="create", path="/memories/plan.md", file_text="globex only")
        refused = await tool.call("memory", {"command": "create", "path": "/memories/../../globex/x", "file_text": "x"},
                                  tenant="acme", run_id="run_m1", timeout_s=30)  # fmt: skip
        assert refused.is_error and "'..'" in refused.content
        big = await tool.call("memory", {"command": "create", "path": "/memories/big", "file_text": "x" * 2000},
                              tenant="acme", run_id="run_m1", timeout_s=30)  # fmt: skip
        assert big.is_error and "cap of 1024 bytes" in big.content
    finally:
        index.close()
        await producer.aclose()

    # A restarted executor reads the topic to its end and has the same files.
    restarted = await read_memory_index(executor)
    assert restarted.files("acme") == index.files("acme")
    assert set(restarted.files("acme")) == {"/memories/customers/dana.md", "/memories/archive/old.md"}
    assert restarted.files("acme")["/memories/customers/dana.md"].version == 2
    fresh = MemoryTool(MemoryFiles(restarted, lambda: store, publish, CAPS, lambda: 0))
    view = await fresh.call("memory_view", {"command": "view", "path": "/memories/customers/dana.md"},
                            tenant="acme", run_id="run_m2", timeout_s=30)  # fmt: skip
    assert view.content.endswith("1\tprefers phone")
    other = await fresh.call("memory_view", {"command": "view", "path": "/memories"}, tenant="globex",
                             run_id="run_g", timeout_s=30)  # fmt: skip
    assert "/memories/plan.md" in other.content and "customers" not in other.content

    # The operator's listing and export (the admin principal), per tenant.
    capsys.readouterr()
    args = argparse.Namespace(memory_command="list", tenant="acme", json=True)
    assert await memory_command(settings, args) == 0
    listed = orjson.loads(capsys.readouterr().out)
    assert [(r["path"], r["size"], r["version"]) for r in listed] == [
        ("/memories/archive/old.md", 5, 1), ("/memories/customers/dana.md", 14, 2)
    ]  # fmt: skip
    out = tmp_path / "acme.json"
    assert await memory_command(settings, argparse.Namespace(memory_command="export", tenant="acme", out=out)) == 0
    assert orjson.loads(out.read_bytes()) == {
        "/memories/archive/old.md": "stale", "/memories/customers/dana.md": "prefers phone\n"
    }  # fmt: skip
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert await memory_command(settings, argparse.Namespace(memory_command="export", tenant="globex", out=None)) == 0
    assert orjson.loads(capsys.readouterr().out) == {"/memories/plan.md": "globex only"}
    assert await memory_command(settings, argparse.Namespace(memory_command="list", tenant="Bad/..", json=False)) == 1

    # The run API, served as the gateway's own principal: each key sees its own tenant's memory.
    for tenant in ("acme", "globex"):
        await create_tenant(settings, tenant, tenant.title())
    reader = ["runs:read", "memory:read"]
    acme_ops = await issue_key(settings, "acme", "ops", scopes=reader)
    acme_app = await issue_key(settings, "acme", "app")
    globex_ops = await issue_key(settings, "globex", "ops", scopes=reader)
    async with running_gateway(as_component(settings, "gateway"), port=0) as url:
        async with RunsClient(url, acme_ops) as acme:
            assert [(f.path, f.version) for f in await acme.memory()] == [
                ("/memories/archive/old.md", 1), ("/memories/customers/dana.md", 2)
            ]  # fmt: skip
            exported = await acme.export_memory()
            assert exported.files == orjson.loads(out.read_bytes()) and exported.errors == {}
        async with RunsClient(url, globex_ops) as globex:
            assert [f.path for f in await globex.memory()] == ["/memories/plan.md"]
            assert (await globex.export_memory()).files == {"/memories/plan.md": "globex only"}
        async with RunsClient(url, acme_app) as app:  # the default scopes: listing, not contents
            assert len(await app.memory()) == 2
            with pytest.raises(ApiError) as denied:
                await app.export_memory()
            assert (denied.value.status, denied.value.type) == (403, "missing_scope")
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {globex_ops}"}) as http:
            for sneaky in ("/v1/memory/export?tenant=acme", "/v1/memory?tenant_id=acme", "/v1/memory/acme",
                           "/v1/memory/export/acme/memories/customers/dana.md"):  # fmt: skip
                r = await http.get(sneaky)
                assert r.status_code in (400, 404) and "prefers" not in r.text and "dana" not in r.text, sneaky
    await store.close()


async def test_only_the_tool_executor_writes_the_memory_topic(settings: Settings) -> None:
    topic = memory_topic(settings)
    writer = as_component(settings, "tool-executor").kafka_extra
    assert await attacks.produce(settings.bootstrap_servers, writer, topic)  # a record the readers below may see
    assert await attacks.consume_any(settings.bootstrap_servers, as_component(settings, "gateway").kafka_extra, topic)
    for outsider in ("gateway", "orchestrator", "policy-gate", "model-invoker"):
        auth = as_component(settings, outsider).kafka_extra
        assert not await attacks.produce(settings.bootstrap_servers, auth, topic, timeout_s=4.0), outsider
    assert not await attacks.consume_any(settings.bootstrap_servers, as_component(settings, "orchestrator").kafka_extra,
                                         topic, timeout_s=3.0)  # fmt: skip
