"""Attacks on egress to internal addresses (issue 13, findings 2 and 9's egress bounds). Each
returns True when the attack SUCCEEDED.

Everything stays on this machine: "internal" targets are listeners on 127.0.0.1 / ::1 (the broker
port among them), and the stand-in for a public server listens on 127.0.0.2, which the proxy is
told to treat as public through the operator's exemption (`AddressRules.exempting`), the same
switch an air-gapped install would use. Addresses off this machine (169.254.169.254, 10.0.0.1) are
only ever offered to a defended proxy, which refuses them before connecting; `control=True` (the
address rules switched off: every address exempt) never runs those.

* registration: `register_via_api`, `register_via_cli` (an internal allowlist entry or remote URL)
* proxy: `connect_internal`, `plain_http_internal`, `rebinding`, `mixed_answer`, `forged_host`,
  `sni_mismatch`, `tunnel_flood`, `record_flood`
* executor: `remote_mcp_internal`, `remote_rebinding`, `oversized_reply`
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import httpx2

from agentstream.netguard import AddressRules, IPAddress, SystemResolver, parse_literal
from agentstream.registry.entry import ToolEntry
from agentstream.sandbox import EgressProxy

PUBLIC_STANDIN = "127.0.0.2"
# Off-machine addresses: offered only to a defended proxy (see the module's docstring).
OFF_MACHINE = frozenset({"169.254.169.254", "10.0.0.1"})


def proxy_rules(*, control: bool) -> AddressRules:
    """The rules an attack's proxy runs under: production's plus the stand-in public server, or
    (control) none at all."""
    return AddressRules.exempting(["0.0.0.0/0", "::/0"] if control else [f"{PUBLIC_STANDIN}/32"])


def loopback_name() -> str | None:
    """A name other than localhost that /etc/hosts maps to loopback (resolves with no DNS)."""
    with contextlib.suppress(OSError):
        for line in Path("/etc/hosts").read_text().splitlines():
            fields = line.split("#", 1)[0].split()
            if len(fields) >= 2 and fields[0].startswith("127."):
                for name in fields[1:]:
                    if "localhost" not in name and "." not in name:
                        return name
    return None


class ScriptedResolver:
    """A DNS server the attacker controls: each name answers its scripted answers in turn (the
    last one repeats); other names go to the system resolver (/etc/hosts here)."""

    def __init__(self, answers: dict[str, Sequence[Sequence[str]]]) -> None:
        self.answers = {name: [list(a) for a in seq] for name, seq in answers.items()}
        self.calls: list[str] = []
        self._system = SystemResolver()

    async def resolve(self, host: str, port: int) -> Sequence[IPAddress]:
        self.calls.append(host)
        script = self.answers.get(host)
        if script is None:
            return await self._system.resolve(host, port)
        answer = script.pop(0) if len(script) > 1 else script[0]
        return [a for a in (parse_literal(x) for x in answer) if a is not None]


@dataclass
class Listener:
    """A TCP server that records what reaches it; `http` answers one request with the Host it saw."""

    host: str
    port: int
    http: bool = False
    connections: int = 0
    received: bytearray = field(default_factory=bytearray)
    hosts: list[str] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if self.http:
                head = await reader.readuntil(b"\r\n\r\n")
                self.received += head
                host = next((ln.split(b":", 1)[1].strip() for ln in head.split(b"\r\n")[1:]
                             if ln.lower().startswith(b"host:")), b"")  # fmt: skip
                self.hosts.append(host.decode("latin-1"))
                body = b"host=" + host
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
            else:
                while chunk := await reader.read(65536):
                    self.received += chunk
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def aclose(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2.0)


async def listen(host: str, port: int = 0, *, http: bool = False) -> Listener:
    listener = Listener(host, port, http)
    listener.server = await asyncio.start_server(listener._serve, host, port)
    listener.port = listener.server.sockets[0].getsockname()[1]
    return listener


async def twin_listeners(*, http: bool = False) -> tuple[Listener, Listener]:
    """A stand-in public server and an internal one on the same port (a CONNECT names one port)."""
    for _ in range(20):
        internal = await listen("127.0.0.1", http=http)
        try:
            return await listen(PUBLIC_STANDIN, internal.port, http=http), internal
        except OSError:
            await internal.aclose()
    raise RuntimeError("no port free on both 127.0.0.1 and 127.0.0.2")


@asynccontextmanager
async def running_proxy(
    tmp: Path, allowlist: Sequence[str], *, control: bool, resolver: ScriptedResolver | None = None
) -> AsyncIterator[EgressProxy]:
    proxy = EgressProxy(tmp / f"egress-{id(allowlist)}.sock", allowlist, rules=proxy_rules(control=control),
                        resolver=resolver or ScriptedResolver({}), connect_timeout_s=3.0)  # fmt: skip
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.aclose()


async def proxy_request(proxy: EgressProxy, head: str, then: bytes = b"") -> tuple[int, bytes]:
    """Sends one request head (and, after a 200 to a CONNECT, `then`); returns the status and what followed."""
    reader, writer = await asyncio.open_unix_connection(proxy.path)
    try:
        writer.write(head.encode("latin-1"))
        await writer.drain()
        try:
            status_line = await asyncio.wait_for(reader.readline(), 5)
        except TimeoutError:
            return 0, b""  # forwarded to an upstream that never answered: not refused
        status = int(status_line.split()[1]) if len(status_line.split()) > 1 else 0
        if then and status == 200:
            while (await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b""):
                pass
            writer.write(then)
            await writer.drain()
        with contextlib.suppress(OSError, TimeoutError):
            rest = await asyncio.wait_for(reader.read(65536), 0.5)
            return status, rest
        return status, b""
    finally:
        writer.close()


def client_hello(server_name: str | None) -> bytes:
    """The first flight of a real TLS client (Python's ssl) asking for `server_name`."""
    ctx = ssl.create_default_context()
    if server_name is None:
        ctx.check_hostname = False
    tls = ctx.wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- registration ---------------------------------------------------------------------------------


async def register_via_api(client: httpx.AsyncClient, *, egress: str, url: str | None = None) -> bool:
    """POST /v1/tools with an internal allowlist entry (a stdio tool) or remote URL."""
    body: dict[str, object] = {"name": "probe", "tier": "read_only", "egress": [egress]}
    body |= {"url": url} if url else {"command": ["python3", "-c", "pass"]}
    response = await client.post("/v1/tools", json=body)
    return response.status_code == 201


async def register_via_cli(owner: str, *, egress: str, url: str | None = None) -> bool:
    """`agentstream tools register` (in process; Settings come from the caller's environment)."""
    from agentstream.cli.main import parser

    where = ["--url", url] if url else ["--command", "python3 -c pass"]
    args = parser().parse_args(["tools", "register", "probe", *where, "--tier", "read_only",
                                "--egress", egress, "--owner", owner])  # fmt: skip
    return int(await args.handler(args)) == 0


# -- the sandbox's egress proxy -------------------------------------------------------------------


async def connect_internal(tmp: Path, host: str, port: int, *, control: bool = False, resolver: ScriptedResolver | None = None) -> bool:  # fmt: skip
    """CONNECT to an allowlisted internal host: succeeds if the proxy opened the tunnel (or, for an
    off-machine address, tried to)."""
    if control and host in OFF_MACHINE:
        raise ValueError(f"{host} is never offered to an undefended proxy")
    async with running_proxy(tmp, [_authority(host, port)], control=control, resolver=resolver) as proxy:
        status, _ = await proxy_request(proxy, f"CONNECT {_authority(host, port)} HTTP/1.1\r\n\r\n", b"ping")
    return status != 403


async def plain_http_internal(tmp: Path, host: str, port: int, *, control: bool = False) -> bool:
    if control and host in OFF_MACHINE:
        raise ValueError(f"{host} is never offered to an undefended proxy")
    authority = _authority(host, port)
    async with running_proxy(tmp, [authority], control=control) as proxy:
        status, _ = await proxy_request(proxy, f"GET http://{authority}/ HTTP/1.1\r\nHost: {authority}\r\n\r\n")
    return status != 403


async def rebinding(tmp: Path, *, control: bool = False) -> bool:
    """A name that answers the stand-in public address first and loopback afterwards: two CONNECTs.
    Succeeds if anything reached the loopback listener."""
    public, internal = await twin_listeners()
    name = "rebind.attacker.example"
    resolver = ScriptedResolver({name: [[PUBLIC_STANDIN], ["127.0.0.1"]]})
    try:
        async with running_proxy(tmp, [f"{name}:{internal.port}"], control=control, resolver=resolver) as proxy:
            for _ in range(2):
                await proxy_request(proxy, f"CONNECT {name}:{internal.port} HTTP/1.1\r\n\r\n", b"ping")
        await asyncio.sleep(0.1)
        return internal.connections > 0
    finally:
        await public.aclose()
        await internal.aclose()


async def mixed_answer(tmp: Path, *, control: bool = False) -> bool:
    """One answer holding loopback and the public stand-in: succeeds if loopback was reached."""
    public, internal = await twin_listeners()
    name = "mixed.attacker.example"
    resolver = ScriptedResolver({name: [["127.0.0.1", PUBLIC_STANDIN]]})
    try:
        async with running_proxy(tmp, [f"{name}:{internal.port}"], control=control, resolver=resolver) as proxy:
            await proxy_request(proxy, f"CONNECT {name}:{internal.port} HTTP/1.1\r\n\r\n", b"ping")
        await asyncio.sleep(0.1)
        return internal.connections > 0
    finally:
        await public.aclose()
        await internal.aclose()


async def forged_host(tmp: Path, forged: str = "127.0.0.1:9092", *, control: bool = False) -> bool:
    """Plain HTTP to an allowed front end naming an internal site in Host: succeeds if the front
    end received the forged Host."""
    front = await listen(PUBLIC_STANDIN, http=True)
    name = "front.attacker.example"
    resolver = ScriptedResolver({name: [[PUBLIC_STANDIN]]})
    try:
        async with running_proxy(tmp, [f"{name}:{front.port}"], control=control, resolver=resolver) as proxy:
            head = f"GET http://{name}:{front.port}/ HTTP/1.1\r\nHost: {forged}\r\n\r\n"
            await proxy_request(proxy, head)
        return forged in front.hosts
    finally:
        await front.aclose()


async def sni_mismatch(tmp: Path, sni: str | None = "metadata.google.internal", *, control: bool = False) -> bool:
    """CONNECT to an allowed name, then a ClientHello for another name (or none): succeeds if any
    byte of it reached the upstream."""
    front = await listen(PUBLIC_STANDIN)
    name = "front.attacker.example"
    resolver = ScriptedResolver({name: [[PUBLIC_STANDIN]]})
    try:
        async with running_proxy(tmp, [f"{name}:{front.port}"], control=control, resolver=resolver) as proxy:
            await proxy_request(proxy, f"CONNECT {name}:{front.port} HTTP/1.1\r\n\r\n", client_hello(sni))
        await asyncio.sleep(0.1)
        return len(front.received) > 0
    finally:
        await front.aclose()


async def tunnel_flood(tmp: Path, tunnels: int = 64) -> bool:
    """Holds `tunnels` CONNECTs open at once: succeeds if the proxy opened more than its bound."""
    front = await listen(PUBLIC_STANDIN)
    opened: list[asyncio.StreamWriter] = []
    try:
        async with running_proxy(tmp, [f"{PUBLIC_STANDIN}:{front.port}"], control=False) as proxy:
            for _ in range(tunnels):
                reader, writer = await asyncio.open_unix_connection(proxy.path)
                opened.append(writer)
                writer.write(f"CONNECT {PUBLIC_STANDIN}:{front.port} HTTP/1.1\r\n\r\n".encode())
                await writer.drain()
                line = await asyncio.wait_for(reader.readline(), 10)
                if b" 200 " not in line:
                    writer.close()
            established = sum(not w.is_closing() for w in opened)
            return established > proxy.max_tunnels
    finally:
        for writer in opened:
            writer.close()
        await front.aclose()


async def record_flood(tmp: Path, requests: int = 600) -> bool:
    """Many refused requests: succeeds if the proxy kept a record of each (memory without end)."""
    async with running_proxy(tmp, ["allowed.example:443"], control=False) as proxy:
        for i in range(requests):
            await proxy_request(proxy, f"CONNECT denied-{i}.example:443 HTTP/1.1\r\n\r\n")
        return len(proxy.denied) >= requests


# -- the executor's remote MCP client -------------------------------------------------------------


async def remote_mcp_internal(url: str, tmp: Path) -> bool:
    """A remote tool whose catalog entry (written before registration checked) names a loopback
    MCP server: succeeds if the executor called it."""
    from agentstream.processors.tool_executor.builtin import BuiltinToolHost
    from agentstream.processors.tool_executor.registry_host import RegistryToolHost

    host_port = url.split("/")[2]
    entry = ToolEntry(name="add", description="", input_schema={"type": "object"}, tier="read_only",
                      transport={"kind": "http", "url": url}, egress=(host_port,))  # fmt: skip
    host = RegistryToolHost(BuiltinToolHost(tmp / "bank.sqlite"))
    try:
        result = await host.call(entry, {"a": 2, "b": 40}, idempotency_key="k", tenant="acme", run_id="r")
    finally:
        await host.aclose()
    return not result.is_error


async def remote_rebinding(*, control: bool = False) -> bool:
    """The executor's HTTP client against a rebinding name, three requests on fresh connections:
    succeeds if loopback was reached."""
    from agentstream.processors.tool_executor.remote_http import CheckedTransport

    public, internal = await twin_listeners(http=True)
    name = "rebind.attacker.example"
    resolver = ScriptedResolver({name: [[PUBLIC_STANDIN], ["127.0.0.1"]]})
    try:
        for _ in range(3):
            transport = CheckedTransport(rules=proxy_rules(control=control), resolver=resolver)
            async with httpx2.AsyncClient(transport=transport) as client:
                with contextlib.suppress(httpx2.HTTPError):
                    await client.get(f"http://{name}:{internal.port}/")
        return internal.connections > 0
    finally:
        await public.aclose()
        await internal.aclose()


async def oversized_reply(megabytes: int = 8) -> bool:
    """A remote server answering with a huge body: succeeds if the executor's client read it all."""
    from agentstream.processors.tool_executor.remote_http import CheckedTransport

    size = megabytes * 1024 * 1024

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % size)
            for _ in range(megabytes):
                writer.write(b" " * (1024 * 1024))
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, PUBLIC_STANDIN, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        transport = CheckedTransport(rules=proxy_rules(control=False), resolver=SystemResolver())
        async with httpx2.AsyncClient(transport=transport) as client:
            try:
                response = await client.post(f"http://{PUBLIC_STANDIN}:{port}/mcp", content=b"{}")
                return len(await response.aread()) >= size
            except (httpx2.HTTPError, httpx2.StreamError):  # the cap ends the read with a StreamError
                return False
    finally:
        server.close()


@asynccontextmanager
async def loopback_exempted(cidrs: str = "127.0.0.1/32") -> AsyncIterator[None]:
    """For a throwaway test or bench deployment whose own servers listen on loopback: sets the
    operator's exemption in this process's environment (inherited by the processors it starts)."""
    import os

    from agentstream.netguard import ALLOW_PRIVATE_ENV

    previous = os.environ.get(ALLOW_PRIVATE_ENV)
    os.environ[ALLOW_PRIVATE_ENV] = cidrs
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(ALLOW_PRIVATE_ENV, None)
        else:
            os.environ[ALLOW_PRIVATE_ENV] = previous
