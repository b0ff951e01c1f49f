"""Tool hosts against real parts: the real mcp-server-time over stdio, and a small probe MCP server
(tests/fixtures/probe_mcp_server.py) that reports what its process sees (the built-in tools on a
SQLite bank file: tests/unit/test_builtin_tools.py)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from agentstream.netguard import ALLOW_PRIVATE_ENV
from agentstream.processors.tool_executor.app import builtin_entry, time_tool_entries
from agentstream.processors.tool_executor.builtin import (
    BuiltinToolHost,
)
from agentstream.processors.tool_executor.mcp_host import McpServerConfig, McpToolHost, time_server_config
from agentstream.processors.tool_executor.registry_host import RegistryToolHost
from agentstream.registry.entry import ToolEntry
from tests.unit.test_builtin_tools import call

PROBE_SERVER = Path(__file__).parents[1] / "fixtures" / "probe_mcp_server.py"
MEMO_SERVER = Path(__file__).parents[1] / "fixtures" / "memo_mcp_server.py"
# Who is calling, as the executor tells RegistryToolHost: the run's tenant and the run.
CALLER: dict[str, str] = {"tenant": "acme", "run_id": "run-1"}
# Generous: a restart is a fresh Python interpreter importing the SDK, slow on a loaded machine.
RESTART_BUDGET_S = 30.0


def probe_config(**overrides: Any) -> McpServerConfig:
    return dataclasses.replace(
        McpServerConfig(name="probe", command=sys.executable, args=[str(PROBE_SERVER)]), **overrides
    )


def child_pids(marker: str) -> set[int]:
    """Our direct children whose command line mentions `marker`, read from /proc (no psutil)."""
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and marker.encode() in cmdline:
            found.add(int(entry))
    return found


@pytest.fixture(scope="module")
async def time_host() -> AsyncIterator[McpToolHost]:
    host = McpToolHost(time_server_config())
    await host.start()
    yield host
    await host.aclose()


# The built-in tools, in-process: tests/unit/test_builtin_tools.py.


# --- mcp-server-time over stdio ---------------------------------------------------------------


async def test_time_server_tools_are_discovered_with_schemas(time_host: McpToolHost) -> None:
    by_name = {d.spec.name: d for d in time_host.descriptors()}
    assert {"get_current_time", "convert_time"} <= set(by_name)
    assert "timezone" in by_name["get_current_time"].spec.input_schema["properties"]
    assert set(by_name["convert_time"].spec.input_schema["required"]) == {"source_timezone", "time", "target_timezone"}
    descriptor = by_name["get_current_time"]
    assert (descriptor.source, descriptor.risk, descriptor.idempotent) == ("mcp:time", "read_only", True)
    assert descriptor.spec.description


async def test_time_server_answers_and_reports_tool_errors(time_host: McpToolHost) -> None:
    result = await call(time_host, "get_current_time", {"timezone": "UTC"})
    assert not result.is_error
    assert datetime.fromisoformat(json.loads(result.content)["datetime"]).utcoffset() is not None
    converted = await call(
        time_host, "convert_time", {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}
    )
    assert not converted.is_error and "21:00" in converted.content
    bad = await call(time_host, "get_current_time", {"timezone": "Mars/Olympus_Mons"})
    assert bad.is_error and "Mars/Olympus_Mons" in bad.content
    unknown = await call(time_host, "get_weather", {})
    assert unknown.is_error and "unknown tool" in unknown.content
    assert time_host.restarts == 0


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the server's pid in /proc")
async def test_time_server_survives_a_timeout_and_a_kill() -> None:
    before = child_pids("mcp_server_time")
    host = McpToolHost(time_server_config())
    await host.start()
    try:
        timed_out = await call(host, "get_current_time", {"timezone": "UTC"}, timeout_s=1e-6)
        assert timed_out.is_error and "timed out" in timed_out.content
        after_timeout = await call(host, "get_current_time", {"timezone": "UTC"}, timeout_s=RESTART_BUDGET_S)
        assert not after_timeout.is_error, after_timeout
        assert host.restarts == 1

        (pid,) = child_pids("mcp_server_time") - before
        os.kill(pid, signal.SIGKILL)
        # Read-only, so the host may re-send it to the fresh server; either way it must not raise.
        await call(host, "get_current_time", {"timezone": "UTC"}, timeout_s=RESTART_BUDGET_S)
        after_kill = await call(host, "get_current_time", {"timezone": "UTC"}, timeout_s=RESTART_BUDGET_S)
        assert not after_kill.is_error, after_kill
        assert host.restarts == 2
        assert pid not in child_pids("mcp_server_time")
    finally:
        await host.aclose()
    assert not child_pids("mcp_server_time") - before  # aclose left no server behind


async def test_start_failure_is_reported() -> None:
    with pytest.raises(RuntimeError, match="not found"):
        await McpToolHost(McpServerConfig(name="nope", command="/no/such/server", args=[])).start()
    exits = McpServerConfig(name="exits", command=sys.executable, args=["-c", "raise SystemExit(3)"])
    with pytest.raises(RuntimeError, match="failed to start"):
        await McpToolHost(exits).start()


# --- the probe server: environment, _meta, slow and failing tools -----------------------------


async def test_server_environment_is_scrubbed_and_meta_carries_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTSTREAM_TEST_SECRET", "hunter2")
    # The SDK would pass these through by default; the host must not.
    monkeypatch.setenv("USER", "someone")
    monkeypatch.setenv("SHELL", "/bin/sh")
    host = McpToolHost(probe_config(env={"PROBE_SETTING": "on"}, timeout_s=20.0))
    await host.start()
    try:
        keys = set((await call(host, "env_keys", {})).content.splitlines())
        assert "AGENTSTREAM_TEST_SECRET" not in keys
        assert "PROBE_SETTING" in keys and "PATH" in keys
        assert keys <= {"PATH", "HOME", "LANG", "LC_CTYPE", "PROBE_SETTING"}, keys

        meta = json.loads((await call(host, "echo_meta", {}, key="run7:2:1")).content)
        assert meta["idempotency_key"] == "run7:2:1"

        failed = await call(host, "fail", {"reason": "on purpose"})
        assert failed.is_error and "on purpose" in failed.content

        slow = await call(host, "sleep_s", {"seconds": 30}, timeout_s=0.5)
        assert slow.is_error and "timed out" in slow.content
        assert not (await call(host, "env_keys", {}, timeout_s=RESTART_BUDGET_S)).is_error
        assert host.restarts == 1
    finally:
        await host.aclose()


async def test_lost_connection_is_not_resent_for_a_non_idempotent_tool() -> None:
    host = McpToolHost(probe_config(risk="irreversible", idempotent=False))
    await host.start()
    try:
        pid = int((await call(host, "pid", {})).content)
        os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.2)  # let the transport see EOF before the next request
        lost = await call(host, "pid", {}, timeout_s=RESTART_BUDGET_S)
        assert lost.is_error and "lost the connection" in lost.content
        fresh = await call(host, "pid", {}, timeout_s=RESTART_BUDGET_S)
        assert not fresh.is_error and int(fresh.content) != pid
    finally:
        await host.aclose()


# --- the registry-driven host the executor uses ----------------------------------------------------


async def test_registry_host_runs_each_entry_where_its_registration_says(tmp_path: Path) -> None:
    builtin = BuiltinToolHost(tmp_path / "bank.sqlite")
    host = RegistryToolHost(builtin)
    try:
        calc = builtin_entry(next(d for d in builtin.descriptors() if d.spec.name == "calculator"))
        assert (await host.call(calc, {"expression": "6 * 7"}, idempotency_key="k1", **CALLER)).content == "42"
        (now,) = [e for e in await time_tool_entries() if e.name == "get_current_time"]
        assert now.tier == "read_only" and now.transport["kind"] == "stdio"
        paris = await host.call(now, {"timezone": "Europe/Paris"}, idempotency_key="k2", **CALLER)
        assert "datetime" in paris.content
        other = dataclasses.replace(calc, transport={"kind": "grpc", "target": "127.0.0.1:9"})
        refused = await host.call(other, {}, idempotency_key="k3", **CALLER)
        assert refused.is_error and "not supported" in refused.content
    finally:
        await host.aclose()


@pytest.fixture
async def remote_mcp_url() -> AsyncIterator[str]:
    """A real MCP server over streamable HTTP, in its own process."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = PROBE_SERVER.parent / "http_mcp_server.py"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(server), str(port), stderr=asyncio.subprocess.DEVNULL
    )
    try:
        for _ in range(200):
            with contextlib.suppress(OSError):
                _reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        await proc.wait()


async def test_a_remote_tool_runs_over_streamable_http_only_when_its_url_is_allowlisted(
    remote_mcp_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test server listens on loopback, which only the operator's exemption lets through.
    monkeypatch.setenv(ALLOW_PRIVATE_ENV, "127.0.0.1/32")
    host = RegistryToolHost(BuiltinToolHost(tmp_path / "bank.sqlite"))
    port = remote_mcp_url.split(":")[2].split("/")[0]
    add = ToolEntry(name="add", description="", input_schema={"type": "object"}, tier="read_only",
                    transport={"kind": "http", "url": remote_mcp_url}, egress=(f"127.0.0.1:{port}",))  # fmt: skip
    try:
        result = await host.call(add, {"a": 2, "b": 40}, idempotency_key="k-remote", **CALLER)
        assert not result.is_error and result.content == "42"
        echoed = await host.call(dataclasses.replace(add, name="echo_meta"), {}, idempotency_key="k-meta", **CALLER)
        assert json.loads(echoed.content)["idempotency_key"] == "k-meta"
        elsewhere = dataclasses.replace(add, egress=("127.0.0.1:1",))
        refused = await host.call(elsewhere, {"a": 1, "b": 1}, idempotency_key="k-refused", **CALLER)
        assert refused.is_error and "not in its egress allowlist" in refused.content
    finally:
        await host.aclose()


def memo_entry(name: str, **overrides: Any) -> ToolEntry:
    """A platform-wide tool on the memo server, which remembers values across calls. Unsandboxed
    (platform tools may opt out) so this runs without namespaces; test_sandbox covers the sandbox."""
    transport = {"kind": "stdio", "server": "memo", "command": sys.executable, "args": [str(MEMO_SERVER)],
                 "sandbox": False}  # fmt: skip
    entry = ToolEntry(name=name, description="", input_schema={"type": "object"}, tier="read_only", transport=transport)
    return dataclasses.replace(entry, **overrides)


async def test_tenants_never_share_a_server_process_and_credentialed_tools_not_even_across_runs(
    tmp_path: Path,
) -> None:
    now = [0.0]  # the host's idea of time, so a slow machine cannot make a server look idle
    host = RegistryToolHost(BuiltinToolHost(tmp_path / "bank.sqlite"), idle_s=60.0, clock=lambda: now[0])
    remember, recall = memo_entry("remember"), memo_entry("recall")

    async def memo(entry: ToolEntry, tenant: str, run_id: str, **arguments: str) -> str:
        result = await host.call(entry, arguments, idempotency_key="k", tenant=tenant, run_id=run_id)
        assert not result.is_error, result
        return result.content

    try:
        assert await memo(remember, "acme", "run-a1", value="acme's customer list") == "remembered"
        # The same tenant's next run reaches the same process (so a process does keep what it is told)...
        assert await memo(recall, "acme", "run-a2") == "acme's customer list"
        # ...and another tenant's call to the very same platform-wide tool never does.
        assert await memo(recall, "globex", "run-g1") == ""
        assert host.server_count == 2
        assert len(child_pids(str(MEMO_SERVER))) == 2

        # A tool that receives credentials gets a process per run: a secret stays with its run.
        keep, read = (dataclasses.replace(e, secrets=("crm_token",)) for e in (remember, recall))
        assert await memo(keep, "acme", "run-a1", value="token-of-run-a1") == "remembered"
        assert await memo(read, "acme", "run-a1") == "token-of-run-a1"
        assert await memo(read, "acme", "run-a2") == ""
        assert host.server_count == 4

        # Idle servers are closed (and their processes end).
        now[0] += 61.0
        host.close_idle()
        for _ in range(100):
            if host.server_count == 0 and not child_pids(str(MEMO_SERVER)):
                break
            await asyncio.sleep(0.1)
        assert host.server_count == 0 and not child_pids(str(MEMO_SERVER))
        assert await memo(recall, "acme", "run-a3") == ""  # a fresh process for the next call
    finally:
        await host.aclose()
    assert not child_pids(str(MEMO_SERVER))
