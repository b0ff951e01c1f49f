"""The tool sandbox against real processes: user+network namespaces via unshare, rlimits, the
egress proxy on a unix socket, and real MCP servers (mcp-server-time, mcp-server-git) run in it."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agentstream.config import ModelSettings, Settings
from agentstream.credentials.keys import local_key_provider
from agentstream.netguard import ALLOW_PRIVATE_ENV
from agentstream.processors.tool_executor.builtin import BuiltinToolHost
from agentstream.processors.tool_executor.mcp_host import McpServerConfig, McpToolHost
from agentstream.processors.tool_executor.registry_host import RegistryToolHost
from agentstream.registry.entry import ToolEntry
from agentstream.sandbox import (
    EgressProxy,
    SandboxPolicy,
    SandboxUnavailable,
    launcher,
    make_sandbox_dir,
    namespaces_available,
    sandboxed_argv,
    scrubbed_environment,
)
from tests.harness import GIT_SAFE_ENV, make_git_repo

PROBE_SERVER = Path(__file__).parents[1] / "fixtures" / "probe_mcp_server.py"
MEMO_SERVER = Path(__file__).parents[1] / "fixtures" / "memo_mcp_server.py"
needs_namespaces = pytest.mark.skipif(not namespaces_available(), reason="needs unprivileged user+net namespaces")


@pytest.fixture(autouse=True)
def _loopback_test_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    # This module's servers listen on 127.0.0.1, which the egress rules refuse unless the operator
    # exempts it (tests/test_attack_internal_egress.py runs without the exemption).
    monkeypatch.setenv(ALLOW_PRIVATE_ENV, "127.0.0.1/32")


CRASH_SERVER = """
import os
from mcp.server.mcpserver import MCPServer

server = MCPServer("crash")


@server.tool(description="Ends the server process on the spot.")
def die() -> str:
    os._exit(3)


if __name__ == "__main__":
    server.run()
"""

NETWORK_PROBE = """
import errno, http.client, json, os, socket, sys, urllib.error, urllib.request
port, other = int(sys.argv[1]), int(sys.argv[2])
out = {}
try:
    socket.create_connection(("127.0.0.1", port), timeout=3)
    out["direct"] = "connected"
except OSError as exc:
    out["direct"] = type(exc).__name__
try:
    socket.create_connection(("192.0.2.1", 80), timeout=3)  # TEST-NET-1: no route in an empty netns
    out["remote"] = "connected"
except OSError as exc:
    out["remote"] = exc.errno
out["get"] = urllib.request.urlopen(f"http://127.0.0.1:{port}/hello", timeout=10).read().decode()
proxy_port = int(os.environ["HTTPS_PROXY"].rsplit(":", 1)[1])
tunnel = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=10)
tunnel.set_tunnel("127.0.0.1", port)
tunnel.request("GET", "/tunnel")
out["tunnel"] = tunnel.getresponse().read().decode()
try:
    urllib.request.urlopen(f"http://127.0.0.1:{other}/nope", timeout=10)
except urllib.error.HTTPError as exc:
    out["denied"] = [exc.code, exc.read().decode()]
refused = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=10)
refused.set_tunnel("127.0.0.1", other)
try:
    refused.request("GET", "/")
except OSError as exc:
    out["denied_connect"] = str(exc)
print(json.dumps(out))
"""


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello from {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def http_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
async def proxy(tmp_path: Path, http_port: int) -> AsyncIterator[EgressProxy]:
    egress = EgressProxy(tmp_path / "egress.sock", [f"127.0.0.1:{http_port}"])
    await egress.start()
    yield egress
    await egress.aclose()


async def run_sandboxed(
    tmp_path: Path, script: str, *args: str, policy: SandboxPolicy, proxy_socket: str | None = None
) -> tuple[int, str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    argv = sandboxed_argv(sys.executable, ["-c", script, *args], policy, proxy_socket)
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=scrubbed_environment({}, home=str(home)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=20)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def processes_mentioning(marker: str) -> set[int]:
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.add(int(entry))
            except OSError:
                continue
    return found


# --- policy and proxy, no sandbox needed --------------------------------------------------------


async def test_proxy_refuses_oversized_heads_and_non_http_requests(proxy: EgressProxy) -> None:
    async def exchange(request: bytes) -> bytes:
        reader, writer = await asyncio.open_unix_connection(proxy.path)
        writer.write(request)
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), timeout=5)
        writer.close()
        return reply

    huge = b"GET http://127.0.0.1/ HTTP/1.1\r\nX-Filler: " + b"a" * (20 * 1024) + b"\r\n\r\n"
    assert (await exchange(huge)).startswith(b"HTTP/1.1 400")
    assert (await exchange(b"GET https://127.0.0.1/ HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 400")
    assert (await exchange(b"GET /relative HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 400")
    assert proxy.allowed == [] and proxy.denied == []


# --- processes in the sandbox -------------------------------------------------------------------


@needs_namespaces
async def test_no_direct_network_but_allowlisted_egress_through_the_proxy(
    tmp_path: Path, http_port: int, proxy: EgressProxy
) -> None:
    # A real listener that is not allowlisted, so a refusal cannot be a failure to connect.
    with socket.create_server(("127.0.0.1", 0)) as other:
        other_port = other.getsockname()[1]
        policy = SandboxPolicy(egress_allowlist=(f"127.0.0.1:{http_port}",))
        code, out, err = await run_sandboxed(
            tmp_path, NETWORK_PROBE, str(http_port), str(other_port), policy=policy, proxy_socket=proxy.path
        )
    assert code == 0, err
    seen = json.loads(out)
    # 127.0.0.1 inside is the namespace's own loopback, where nothing listens.
    assert seen["direct"] == "ConnectionRefusedError"
    assert seen["remote"] == errno.ENETUNREACH
    assert seen["get"] == "hello from /hello"
    assert seen["tunnel"] == "hello from /tunnel"
    assert seen["denied"][0] == 403 and "not on the sandbox allowlist" in seen["denied"][1]
    assert "403" in seen["denied_connect"]
    assert proxy.allowed == [("127.0.0.1", http_port)] * 2
    assert proxy.denied == [("127.0.0.1", other_port)] * 2


@needs_namespaces
async def test_memory_limit_stops_a_large_allocation(tmp_path: Path) -> None:
    script = "a = bytearray(32 << 20)\nprint('small ok', flush=True)\nb = bytearray(1 << 30)\nprint('large ok')"
    code, out, err = await run_sandboxed(tmp_path, script, policy=SandboxPolicy(memory_mb=256))
    assert code != 0 and "MemoryError" in err, (code, out, err)
    assert out.splitlines() == ["small ok"]


@needs_namespaces
async def test_cpu_limit_kills_a_busy_loop(tmp_path: Path) -> None:
    started = time.monotonic()
    code, _, err = await run_sandboxed(tmp_path, "while True:\n    pass", policy=SandboxPolicy(cpu_seconds=1))
    # The bootstrap reports a tool killed by signal N as 128+N, like a shell.
    assert code in (128 + signal.SIGXCPU, 128 + signal.SIGKILL), (code, err)
    assert time.monotonic() - started < 10


@needs_namespaces
async def test_environment_is_scrubbed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTSTREAM_TEST_SECRET", "hunter2")
    script = (
        "import json, os, resource\nprint(json.dumps([dict(os.environ), resource.getrlimit(resource.RLIMIT_NOFILE)]))"
    )
    code, out, err = await run_sandboxed(tmp_path, script, policy=SandboxPolicy(max_open_files=100))
    assert code == 0, err
    env, nofile = json.loads(out)
    assert "AGENTSTREAM_TEST_SECRET" not in env and "hunter2" not in out
    assert env["HOME"] == str(tmp_path / "home") and env["LANG"] == "C.UTF-8"
    assert set(env) <= {"PATH", "HOME", "LANG", "LC_CTYPE", "MALLOC_ARENA_MAX"}, env
    assert nofile == [100, 100]


@needs_namespaces
async def test_sigterm_reaches_the_tool_and_its_exit_status_comes_back(tmp_path: Path) -> None:
    script = (
        "import os, signal, time\n"
        # os.write: the signal can land while print('ready') is still inside the stdout buffer.
        "signal.signal(signal.SIGTERM, lambda *_: (os.write(1, b'got term\\n'), os._exit(7)))\n"
        # Short sleeps: a handler tripped just before a long sleep's syscall would run only after it.
        "print('ready', flush=True)\nfor _ in range(600): time.sleep(0.05)"
    )
    argv = sandboxed_argv(sys.executable, ["-c", script], SandboxPolicy(), None)
    process = await asyncio.create_subprocess_exec(
        *argv, env=scrubbed_environment({}, home=str(tmp_path)), stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    assert await asyncio.wait_for(process.stdout.readline(), timeout=10) == b"ready\n"
    process.send_signal(signal.SIGTERM)  # the bootstrap alone: unshare exec'd into it
    assert await asyncio.wait_for(process.stdout.read(), timeout=10) == b"got term\n"
    assert await process.wait() == 7


@needs_namespaces
def test_loopback_comes_up_without_iproute2() -> None:
    script = (
        "import socket\nfrom agentstream.sandbox.bootstrap import loopback_up_by_ioctl\n"
        "loopback_up_by_ioctl()\nserver = socket.create_server(('127.0.0.1', 0))\n"
        "socket.create_connection(server.getsockname(), timeout=3)\nprint('up')"
    )
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--net", sys.executable, "-c", script],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (0, "up\n"), done.stderr


@pytest.fixture
def no_unshare(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # As on a machine whose kernel refuses the namespaces: the bootstrap's probe fails there.
    monkeypatch.setattr(launcher, "namespaces_available", lambda: False)
    yield


async def test_without_namespaces_the_sandbox_refuses_to_run(no_unshare: None, tmp_path: Path) -> None:
    with pytest.raises(SandboxUnavailable):
        sandboxed_argv(sys.executable, ["-V"], SandboxPolicy(), None)
    host = McpToolHost(McpServerConfig("probe", sys.executable, [str(PROBE_SERVER)], sandbox=SandboxPolicy()))
    with pytest.raises(SandboxUnavailable):
        await host.start()
    # Opting out of the network namespace is explicit, and still gets the limits.
    script = "import resource\nprint(resource.getrlimit(resource.RLIMIT_NPROC))"
    policy = SandboxPolicy(network_namespace=False, max_processes=50)
    assert sandboxed_argv(sys.executable, [], policy, None)[0] == sys.executable
    code, out, err = await run_sandboxed(tmp_path, script, policy=policy)
    assert (code, out) == (0, "(50, 50)\n"), err


# --- MCP servers through McpToolHost -------------------------------------------------------


@needs_namespaces
async def test_time_server_runs_in_the_sandbox() -> None:
    config = McpServerConfig(
        name="time",
        command=sys.executable,
        args=["-m", "mcp_server_time", "--local-timezone", "UTC"],
        sandbox=SandboxPolicy(cpu_seconds=20, memory_mb=512),
    )
    host = McpToolHost(config)
    await host.start()
    try:
        result = await host.call("get_current_time", {"timezone": "UTC"}, idempotency_key="k", timeout_s=20)
        assert not result.is_error, result
        assert datetime.fromisoformat(json.loads(result.content)["datetime"]).utcoffset() is not None
    finally:
        await host.aclose()
    assert host.egress is not None and host.egress.denied == []


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    return make_git_repo(tmp_path / "repo")


@needs_namespaces
async def test_git_server_runs_in_the_sandbox(git_repo: Path) -> None:
    repo = git_repo
    config = McpServerConfig(
        name="git",
        command=sys.executable,
        args=["-m", "mcp_server_git", "--repository", str(repo)],
        env=GIT_SAFE_ENV,
        sandbox=SandboxPolicy(cpu_seconds=20, memory_mb=512),
    )
    host = McpToolHost(config)
    await host.start()
    try:
        assert {"git_status", "git_log"} <= {d.spec.name for d in host.descriptors()}
        status = await host.call("git_status", {"repo_path": str(repo)}, idempotency_key="k", timeout_s=20)
        assert not status.is_error and "untracked.txt" in status.content, status
        log = await host.call("git_log", {"repo_path": str(repo)}, idempotency_key="k", timeout_s=20)
        assert not log.is_error and "first commit" in log.content, log
        assert processes_mentioning(str(repo))
    finally:
        await host.aclose()
    assert not processes_mentioning(str(repo))  # the tool, a grandchild, went with the host


@needs_namespaces
async def test_probe_server_in_the_sandbox_sees_a_scrubbed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTSTREAM_TEST_SECRET", "hunter2")
    config = McpServerConfig(
        "probe", sys.executable, [str(PROBE_SERVER)], env={"PROBE_SETTING": "on"}, sandbox=SandboxPolicy()
    )
    host = McpToolHost(config)
    await host.start()
    try:
        result = await host.call("env_keys", {}, idempotency_key="k", timeout_s=20)
        keys = set(result.content.splitlines())
        assert not result.is_error and "AGENTSTREAM_TEST_SECRET" not in keys
        assert {"PROBE_SETTING", "HOME", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"} <= keys, keys
    finally:
        await host.aclose()


@needs_namespaces
async def test_a_server_that_exits_inside_the_sandbox_yields_an_error(tmp_path: Path) -> None:
    script = tmp_path / "crash_server.py"
    script.write_text(CRASH_SERVER)
    # Not idempotent, so the host reports the loss instead of re-sending into a second crash.
    config = McpServerConfig(
        "crash", sys.executable, [str(script)], risk="irreversible", idempotent=False, sandbox=SandboxPolicy()
    )
    host = McpToolHost(config)
    await host.start()
    try:
        result = await host.call("die", {}, idempotency_key="k", timeout_s=20)
        assert result.is_error and "lost the connection" in result.content, result
    finally:
        await host.aclose()


# --- what a sandboxed tool can see of the filesystem and of other processes ---------------------

FILES_PROBE = """
import ctypes, json, os, sys
out = {"cwd": os.getcwd(), "pid": os.getpid(),
       "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit())}
for name, path in zip(("secret", "kept", "rehidden", "relative"), sys.argv[1:5]):
    try:
        out[name] = open(path).read()
    except OSError as exc:
        out[name] = type(exc).__name__
try:
    os.kill(int(sys.argv[5]), 0)
    out["signal"] = "sent"
except OSError as exc:
    out["signal"] = type(exc).__name__
try:
    open(os.path.join(os.path.dirname(sys.argv[1]), "planted"), "w")
    out["write"] = "written"
except OSError as exc:
    out["write"] = type(exc).__name__
libc = ctypes.CDLL(None, use_errno=True)
# Root of its user namespace, yet no capability: it cannot lift a cover...
out["umount"] = os.strerror(ctypes.get_errno()) if libc.umount2(os.path.dirname(sys.argv[1]).encode(), 2) else "done"
out["capabilities"] = [line.split()[1] for line in open("/proc/self/status") if line.startswith("CapEff")]
# ...nor from a user namespace of its own, where the covers it inherits are locked.
if libc.unshare(0x10000000 | 0x20000):  # CLONE_NEWUSER | CLONE_NEWNS
    out["nested"] = "no nested namespace: " + os.strerror(ctypes.get_errno())
elif libc.umount2(os.path.dirname(sys.argv[1]).encode(), 2):
    out["nested"] = os.strerror(ctypes.get_errno())
else:
    out["nested"] = "lifted " + str(os.listdir(os.path.dirname(sys.argv[1])))
open(os.path.join(os.environ["HOME"], "own-file"), "w").write("mine")
out["home"] = open(os.path.join(os.environ["HOME"], "own-file")).read()
import urllib.request
out["get"] = urllib.request.urlopen(sys.argv[6], timeout=10).read().decode()
print(json.dumps(out))
"""


@needs_namespaces
async def test_hidden_paths_are_covered_kept_ones_put_back_and_other_processes_out_of_sight(
    tmp_path: Path, http_port: int
) -> None:
    hidden = tmp_path / "hidden"
    kept = hidden / "venv" / "lib"  # as an interpreter inside the executor user's home would be
    rehidden = kept / "private"
    rehidden.mkdir(parents=True)
    (hidden / "secret.txt").write_text("the platform's secret")
    (kept / "module.py").write_text("kept")
    (rehidden / "key").write_text("hidden again")
    # The egress socket sits where every sandbox's private directory does: hidden, then put back.
    own = Path(make_sandbox_dir())
    (own / "home").mkdir()
    egress = EgressProxy(own / "egress.sock", [f"127.0.0.1:{http_port}"])
    await egress.start()
    policy = SandboxPolicy(hidden_paths=(str(hidden), str(rehidden)), egress_allowlist=egress.allowlist)
    args = [str(hidden / "secret.txt"), str(kept / "module.py"), str(rehidden / "key"), "secret.txt"]
    args += [str(os.getpid()), f"http://127.0.0.1:{http_port}/out"]
    visible = [str(own), str(kept)]
    argv = sandboxed_argv(sys.executable, ["-c", FILES_PROBE, *args], policy, egress.path, visible=visible)
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, env=scrubbed_environment({}, home=str(own / "home")), cwd=hidden,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    finally:
        await egress.aclose()
        shutil.rmtree(own)
    assert process.returncode == 0, stderr.decode()
    seen = json.loads(stdout)
    assert seen["secret"] == "FileNotFoundError"  # covered: an empty directory in its place
    assert seen["kept"] == "kept"
    assert seen["rehidden"] == "FileNotFoundError"
    # Started in a hidden directory, the tool is moved out of it: no way in by relative paths.
    assert seen["relative"] == "FileNotFoundError" and seen["cwd"] == str(own / "home")
    # Nothing can be planted there either: a read-only cover (EROFS), or, under the private /tmp,
    # a mount point of root's that the tool's unprivileged uid may not write in (EACCES).
    assert seen["write"] in ("OSError", "PermissionError")
    assert seen["home"] == "mine" and seen["get"] == "hello from /out"
    assert seen["capabilities"] == ["0000000000000000"] and seen["umount"] == os.strerror(errno.EPERM)
    assert seen["nested"] in (os.strerror(errno.EINVAL), os.strerror(errno.EPERM)) or seen["nested"].startswith(
        "no nested namespace"
    ), seen["nested"]
    # Its own pid namespace: pid 2 under a small init, and no host process to see or signal.
    assert seen["pid"] == 2 and set(seen["pids"]) <= {1, 2, 3}, seen["pids"]
    assert seen["signal"] == "ProcessLookupError"
    assert (hidden / "secret.txt").read_text() == "the platform's secret"  # untouched outside


@needs_namespaces
async def test_a_registered_tool_cannot_read_the_platform_keys_or_another_tenants_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings("127.0.0.1:9", "unused", tmp_path / "platform-home", ModelSettings())
    keys = local_key_provider(settings).path  # creates <home>/keys/master.json, as a deployment does
    other_tenant = settings.state_dir / "tenant-b" / "notes.txt"
    other_tenant.parent.mkdir(parents=True)
    other_tenant.write_text("tenant b's customer list")
    # The executor user's home (dotfiles, cloud credentials) is hidden too, whatever it holds.
    user_home = tmp_path / "executor-home"
    (user_home / ".aws").mkdir(parents=True)
    (user_home / ".aws" / "credentials").write_text("aws_secret_access_key = x")
    monkeypatch.setenv("HOME", str(user_home))
    assert keys.stat().st_size > 0

    transport = {"kind": "stdio", "server": "memo", "command": sys.executable, "args": [str(MEMO_SERVER)]}
    entry = ToolEntry(name="read_path", description="", input_schema={"type": "object"}, tier="read_only",
                      transport=transport, owner="tenant-a")  # fmt: skip
    host = RegistryToolHost(BuiltinToolHost(tmp_path / "bank.sqlite"), hidden_paths=(settings.home,))

    async def tool(name: str, **arguments: str) -> str:
        result = await host.call(dataclasses.replace(entry, name=name), arguments, idempotency_key="k",
                                 tenant="tenant-a", run_id="run-a")  # fmt: skip
        assert not result.is_error, result
        return result.content

    try:
        for path in (keys, other_tenant, user_home / ".aws" / "credentials"):
            answer = await tool("read_path", path=str(path))
            assert answer.startswith("DENIED FileNotFoundError"), (path, answer)
        # An empty cover; or, for a home under /tmp as here, nothing at all in the private /tmp.
        answer = await tool("read_path", path=str(settings.home))
        assert answer == "DIR " or answer.startswith("DENIED FileNotFoundError"), answer
        assert await tool("note", text="kept in its own HOME") == "noted"
        assert await tool("read_path", path="~/memo.txt") == "READ kept in its own HOME"
        seen = json.loads(await tool("processes"))
        assert seen["pid"] == 2 and os.getpid() not in seen["visible"]
    finally:
        await host.aclose()
    assert keys.exists() and other_tenant.read_text() == "tenant b's customer list"
