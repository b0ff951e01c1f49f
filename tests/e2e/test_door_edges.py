"""The edges a new user meets first (issue 15) that need a broker or a process: `agentstream dev`
saying "up" only once its gateway answers, refusing a second deployment on its ports, taking custom
scenarios, and the tools of one MCP server registered through the API sharing its process. The ones
answered without a broker are in tests/unit/test_door_edges.py."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from agentstream.config import Settings
from agentstream.contract.requests import RegisterTool
from agentstream.gateway.tools_api import transport_of
from agentstream.localkafka import free_port
from agentstream.processors.tool_executor.builtin import BuiltinToolHost
from agentstream.processors.tool_executor.registry_host import RegistryToolHost, server_key
from agentstream.registry.admin import read_catalog, register_tool
from agentstream.registry.entry import ToolEntry
from agentstream.tenancy.admin import create_tenant, issue_key
from tests.harness import isolated_settings
from tests.unit.test_door_edges import tool_entry

# -- 2. `agentstream dev`: up only once the gateway answers; its ports and scenarios ---------------

CUSTOM = {"name": "custom", "turns": [
    {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6 * 7"}}]},
    {"text": "the custom scenario answered 42"},
]}  # fmt: skip


@dataclasses.dataclass
class Dev:
    proc: subprocess.Popen[str]
    settings: Settings
    url: str
    env: dict[str, str]
    seconds_to_up: float


def _dev_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            "AGENTSTREAM_TOPIC_PREFIX": settings.topic_prefix, "AGENTSTREAM_HOME": str(settings.home)}  # fmt: skip


@pytest.fixture(scope="module")
async def dev(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Dev]:
    """`agentstream dev --gateway-port P --scenarios DIR` as a user runs it, on the session's broker."""
    settings, scenarios = await isolated_settings(kafka_bootstrap, tmp_path_factory.mktemp("dev"), "dev")
    (scenarios / "custom.json").write_text(json.dumps(CUSTOM))
    port = free_port()
    env = _dev_env(settings)
    t0 = time.monotonic()
    log = open(settings.home / "dev.log", "w")  # noqa: SIM115 - closed below
    cmd = [
        sys.executable,
        "-m",
        "agentstream.cli.main",
        "dev",
        "--gateway-port",
        str(port),
        "--scenarios",
        str(scenarios),
    ]
    proc = await asyncio.to_thread(subprocess.Popen, cmd, env=env, stdout=subprocess.PIPE, stderr=log,
                                   stdin=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        url = f"http://127.0.0.1:{port}"
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 240)
        up_after = time.monotonic() - t0
        assert line.startswith("agentstream dev: up; run API at " + url), line
        # The moment it says up, the gateway answers.
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{url}/healthz")).status_code == 200
        yield Dev(proc, settings, url, env, up_after)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            await asyncio.to_thread(proc.wait, 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


async def test_dev_says_up_only_when_its_gateway_answers_and_runs_a_custom_scenario(dev: Dev) -> None:
    await create_tenant(dev.settings, "acme", "Acme", rate_per_s=100, burst=100)
    key = await issue_key(dev.settings, "acme", "dev test")
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=dev.url, headers=headers, timeout=90) as http:
        # A key used the moment `issue_key` returns: the gateway reads the tenants topic to its
        # end before refusing a well-formed key it has not seen yet.
        assert (await http.get("/v1/runs")).status_code == 200
        created = await http.post("/v1/runs?wait=60", headers={"Idempotency-Key": "custom-1"},
                                  json={"task": "[scenario:custom] what is six times seven?", "tools": ["calculator"]})  # fmt: skip
        assert created.status_code == 201, created.text
        run = created.json()
        assert run["status"] == "completed", run
        assert "the custom scenario answered 42" in json.dumps(run)
        # And through the gateway dev started, an unknown tool is refused at the door...
        typo = await http.post("/v1/runs", headers={"Idempotency-Key": "typo-1"},
                               json={"task": "x", "tools": ["calculatr"]})  # fmt: skip
        assert typo.status_code == 422 and typo.json()["error"]["unknown"] == ["calculatr"]
        assert "calculator" in typo.json()["error"]["available"]
        # ...while a tool registered a moment ago elsewhere (the CLI's path) is not: the gateway
        # reads the registry to its end before refusing a name.
        fresh = dataclasses.replace(tool_entry("brand_new_tool", "acme"), version="")
        await register_tool(dev.settings, fresh, await read_catalog(dev.settings))
        known = await http.post("/v1/runs", headers={"Idempotency-Key": "fresh-1"},
                                json={"task": "[scenario:custom] again", "tools": ["brand_new_tool", "calculator"]})  # fmt: skip
        assert known.status_code == 201, known.text


async def test_a_second_dev_on_the_same_gateway_port_is_refused_by_name(dev: Dev) -> None:
    port = dev.url.rsplit(":", 1)[1]
    cmd = [sys.executable, "-m", "agentstream.cli.main", "dev", "--gateway-port", port]
    done = await asyncio.to_thread(subprocess.run, cmd, env=dev.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert f"port {port} is in use" in done.stderr and "--gateway-port" in done.stderr


def test_dev_refuses_a_kafka_port_beside_a_named_broker(tmp_path: Path) -> None:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "AGENTSTREAM_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "agentstream.cli.main", "dev", "--kafka-port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "KAFKA_BOOTSTRAP_SERVERS" in done.stderr, done.stderr


# -- 4. the tools of one MCP server registered through the API share its process ---------------

MEMO_SERVER = Path(__file__).parents[1] / "fixtures" / "memo_mcp_server.py"


async def test_tools_of_one_server_registered_through_the_api_share_its_process(tmp_path: Path) -> None:
    def registered(name: str) -> ToolEntry:
        # What POST /v1/tools stores for acme's registration of one tool of the memo server.
        body = RegisterTool(name=name, tier="reversible", command=[sys.executable, str(MEMO_SERVER)])
        return ToolEntry(name=name, description="", input_schema={"type": "object"}, tier=body.tier,
                         transport=transport_of(body), owner="acme")  # fmt: skip

    remember, recall = registered("remember"), registered("recall")
    assert server_key(remember, tenant="acme", run_id="r") == server_key(recall, tenant="acme", run_id="r")
    host = RegistryToolHost(BuiltinToolHost(tmp_path / "bank.sqlite"))
    try:
        kept = await host.call(remember, {"value": "created"}, idempotency_key="k1", tenant="acme", run_id="r")
        assert not kept.is_error, kept
        # The second tool sees what the first one left in the server (as `share_file` after
        # `create_file` must), because both reached one sandboxed process.
        found = await host.call(recall, {}, idempotency_key="k2", tenant="acme", run_id="r")
        assert (found.is_error, found.content) == (False, "created")
        assert host.server_count == 1
    finally:
        await host.aclose()
