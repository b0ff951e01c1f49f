"""Issue 13, finding 2 (egress to internal addresses) and finding 9's egress bounds, attacked for
real: registration through the real gateway and the real CLI, a client speaking to the real egress
proxy's socket, and the executor's real remote-MCP client. The operator's exemption
(AGENTSTREAM_EGRESS_ALLOW_PRIVATE) is OFF here, except where a test names the stand-in public
server 127.0.0.2 explicitly; no traffic leaves this machine (see bench/attacks/egress.py)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from agentstream.config import Settings
from agentstream.gateway.service import running_gateway
from agentstream.netguard import ALLOW_PRIVATE_ENV
from agentstream.registry.admin import read_catalog
from agentstream.tenancy.admin import create_tenant, issue_key
from bench.attacks import egress as attacks
from tests.harness import isolated_settings

FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.fixture(autouse=True)
def _no_exemption(monkeypatch: pytest.MonkeyPatch) -> None:
    # Whatever the environment says, these attacks meet the production rules.
    monkeypatch.delenv(ALLOW_PRIVATE_ENV, raising=False)


LOOPBACK_NAME = attacks.loopback_name()
# Each is a way to name an internal address in an allowlist (the issue's list first).
INTERNAL_ENTRIES = [
    "127.0.0.1", "[::1]", "localhost", "169.254.169.254", "10.0.0.1", "::ffff:127.0.0.1",
    "localhost.", "app.localhost", "*.localhost", "127.1", "2130706433", "0.0.0.0", "100.64.0.1",
    "172.16.0.1:8080", "192.168.1.1", "224.0.0.1", "255.255.255.255", "[fd00::1]", "[fe80::1]", "[ff02::1]",
    "[::ffff:169.254.169.254]", "[64:ff9b::a9fe:a9fe]", "[2002:7f00:1::]", "[::]",
    *([LOOPBACK_NAME] if LOOPBACK_NAME else []),
]  # fmt: skip
# The subset the gateway's entry pattern lets through to the address rules (it has no IPv6 syntax).
API_ENTRIES = [e for e in INTERNAL_ENTRIES if "[" not in e and "::" not in e and not e.endswith(".")]


# The pure rules: tests/unit/test_egress_rules.py.


# -- registration ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def gateway(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Settings, str, str]]:  # fmt: skip
    settings, _ = await isolated_settings(kafka_bootstrap, tmp_path_factory.mktemp("egress"), "eg")
    await create_tenant(settings, "acme", "Acme", rate_per_s=500, burst=500)
    key = await issue_key(settings, "acme", "test")
    async with running_gateway(settings, port=0) as url:
        yield settings, url, key


def _broker_port(bootstrap: str) -> int:
    return int(bootstrap.split(",")[0].rsplit(":", 1)[1])


async def test_the_api_refuses_internal_allowlist_entries_and_urls(
    gateway: tuple[Settings, str, str], kafka_bootstrap: str
) -> None:
    settings, url, key = gateway
    broker = _broker_port(kafka_bootstrap)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        for entry in API_ENTRIES:
            assert not await attacks.register_via_api(client, egress=entry), entry
        remote = [(f"http://127.0.0.1:{broker}/mcp", f"127.0.0.1:{broker}"),
                  ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
                  ("http://localhost:8080/mcp", "localhost:8080")]  # fmt: skip
        if LOOPBACK_NAME:
            remote.append((f"http://{LOOPBACK_NAME}:{broker}/mcp", f"{LOOPBACK_NAME}:{broker}"))
        for server_url, entry in remote:
            assert not await attacks.register_via_api(client, egress=entry, url=server_url), server_url
        refused = await client.post("/v1/tools", json={"name": "probe", "tier": "read_only", "egress": ["10.0.0.1"],
                                                       "command": ["python3", "-c", "pass"]})  # fmt: skip
        assert refused.status_code == 422
        assert "10.0.0.1 is refused as an egress destination: a private address" in refused.json()["error"]["message"]
    catalog = await read_catalog(settings)
    assert catalog.latest("acme", "probe") is None  # nothing was registered


async def test_the_cli_refuses_internal_allowlist_entries(
    gateway: tuple[Settings, str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, _, _ = gateway
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", settings.bootstrap_servers)
    monkeypatch.setenv("AGENTSTREAM_TOPIC_PREFIX", settings.topic_prefix)
    monkeypatch.setenv("AGENTSTREAM_HOME", str(settings.home))
    for entry in INTERNAL_ENTRIES:
        assert not await attacks.register_via_cli("acme", egress=entry), entry
        err = capsys.readouterr().err
        assert "refused as an egress destination" in err, (entry, err)
    assert not await attacks.register_via_cli("acme", egress="[::1]:8080", url="http://[::1]:8080/mcp")
    assert "loopback" in capsys.readouterr().err
    assert (await read_catalog(settings)).latest("acme", "probe") is None


# -- the egress proxy -----------------------------------------------------------------------------


@pytest.fixture
async def internal() -> AsyncIterator[tuple[attacks.Listener, attacks.Listener]]:
    """Internal services on loopback, v4 and v6, that count who reaches them."""
    v4 = await attacks.listen("127.0.0.1", http=True)
    v6 = await attacks.listen("::1")
    yield v4, v6
    await v4.aclose()
    await v6.aclose()


async def test_connect_to_the_loopback_broker_is_refused(tmp_path: Path, kafka_bootstrap: str) -> None:
    assert not await attacks.connect_internal(tmp_path, "127.0.0.1", _broker_port(kafka_bootstrap))
    assert not await attacks.plain_http_internal(tmp_path, "127.0.0.1", _broker_port(kafka_bootstrap))


async def test_connect_to_internal_hosts_is_refused_and_reaches_nothing(
    tmp_path: Path, internal: tuple[attacks.Listener, attacks.Listener]
) -> None:
    v4, v6 = internal
    targets = [("::1", v6.port), ("localhost", v4.port), ("::ffff:127.0.0.1", v4.port), ("127.1", v4.port),
               ("2130706433", v4.port), ("0.0.0.0", v4.port), ("169.254.169.254", 80), ("10.0.0.1", 80)]  # fmt: skip
    if LOOPBACK_NAME:
        targets.append((LOOPBACK_NAME, v4.port))
    for host, port in targets:
        assert not await attacks.connect_internal(tmp_path, host, port), host
        assert not await attacks.plain_http_internal(tmp_path, host, port), host
    resolver = attacks.ScriptedResolver({"internal.attacker.example": [["127.0.0.1"]]})
    assert not await attacks.connect_internal(tmp_path, "internal.attacker.example", v4.port, resolver=resolver)
    await asyncio.sleep(0.1)
    assert v4.connections == 0 and v6.connections == 0


async def test_dns_rebinding_reaches_only_the_address_checked(tmp_path: Path) -> None:
    assert not await attacks.rebinding(tmp_path)
    assert not await attacks.mixed_answer(tmp_path)
    # The allowed path itself works: the stand-in public server is reached, by the checked address.
    front = await attacks.listen(attacks.PUBLIC_STANDIN, http=True)
    name = "front.attacker.example"
    resolver = attacks.ScriptedResolver({name: [[attacks.PUBLIC_STANDIN], ["127.0.0.1"]]})
    try:
        async with attacks.running_proxy(tmp_path, [f"{name}:{front.port}"], control=False, resolver=resolver) as proxy:
            status, body = await attacks.proxy_request(proxy, f"GET http://{name}:{front.port}/x HTTP/1.1\r\n\r\n")
            assert status == 200 and body.endswith(f"host={name}:{front.port}".encode())
            assert proxy.connected == [(name, front.port, attacks.PUBLIC_STANDIN)] and resolver.calls == [name]
    finally:
        await front.aclose()


async def test_a_forged_host_header_is_refused(tmp_path: Path) -> None:
    assert not await attacks.forged_host(tmp_path)
    assert not await attacks.forged_host(tmp_path, "metadata.google.internal")


async def test_tls_to_another_server_name_inside_connect_is_refused(tmp_path: Path) -> None:
    assert not await attacks.sni_mismatch(tmp_path)
    assert not await attacks.sni_mismatch(tmp_path, "evil.example")
    assert not await attacks.sni_mismatch(tmp_path, None)  # a name must be named
    # The CONNECT target's own name goes through, ClientHello and all.
    front = await attacks.listen(attacks.PUBLIC_STANDIN)
    name = "front.attacker.example"
    resolver = attacks.ScriptedResolver({name: [[attacks.PUBLIC_STANDIN]]})
    try:
        async with attacks.running_proxy(tmp_path, [f"{name}:{front.port}"], control=False, resolver=resolver) as proxy:
            hello = attacks.client_hello(name)
            status, _ = await attacks.proxy_request(proxy, f"CONNECT {name}:{front.port} HTTP/1.1\r\n\r\n", hello)
        assert status == 200
        await asyncio.sleep(0.1)
        assert bytes(front.received) == hello
    finally:
        await front.aclose()


async def test_tunnels_and_records_per_sandbox_are_bounded(tmp_path: Path) -> None:
    assert not await attacks.tunnel_flood(tmp_path)
    assert not await attacks.record_flood(tmp_path)


# -- the executor's remote MCP client -------------------------------------------------------------


@contextlib.contextmanager
def _free_port(host: str) -> Iterator[int]:
    with socket.socket() as probe:
        probe.bind((host, 0))
        port = int(probe.getsockname()[1])
    yield port


async def _serve(script: Path, *args: str, host: str, port: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(sys.executable, str(script), *args, stderr=asyncio.subprocess.DEVNULL)
    for _ in range(200):
        with contextlib.suppress(OSError):
            _reader, writer = await asyncio.open_connection(host, port)
            writer.close()
            return proc
        await asyncio.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{script.name} did not listen on {host}:{port}")


async def test_remote_mcp_on_an_internal_address_is_never_called(tmp_path: Path) -> None:
    with _free_port("127.0.0.1") as port:
        proc = await _serve(FIXTURES / "http_mcp_server.py", str(port), host="127.0.0.1", port=port)
    try:
        assert not await attacks.remote_mcp_internal(f"http://127.0.0.1:{port}/mcp", tmp_path)
        if LOOPBACK_NAME:
            assert not await attacks.remote_mcp_internal(f"http://{LOOPBACK_NAME}:{port}/mcp", tmp_path)
    finally:
        proc.terminate()
        await proc.wait()
    assert not await attacks.remote_rebinding()


@pytest.mark.parametrize("reply", ["json", "sse"])
async def test_an_oversized_remote_reply_is_cut_with_a_clear_error(
    reply: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentstream.processors.tool_executor.mcp_host import McpServerConfig, McpToolHost

    assert not await attacks.oversized_reply()
    # Through the MCP host, against a real MCP server (on the stand-in public address).
    monkeypatch.setenv(ALLOW_PRIVATE_ENV, f"{attacks.PUBLIC_STANDIN}/32")
    host_ip = attacks.PUBLIC_STANDIN
    with _free_port(host_ip) as port:
        proc = await _serve(FIXTURES / "big_http_mcp_server.py", host_ip, str(port), reply, host=host_ip, port=port)
    server = McpToolHost(McpServerConfig(name="big", command="", args=[], url=f"http://{host_ip}:{port}/mcp"))
    try:
        await server.start()
        result = await server.call("big", {"mb": 3}, idempotency_key="k1", timeout_s=30)
        assert result.is_error and "1048576" in result.content, result.content[:300]
        assert (await server.call("small", {}, idempotency_key="k2", timeout_s=30)).content == "fine"
    finally:
        await server.aclose()
        proc.terminate()
        await proc.wait()
