"""The invoker's lean HTTP/1.1 client over real sockets: keep-alive, framing, failures, TLS, proxies.

The servers here are real TCP servers whose replies each test writes byte for byte, so every
framing and failure case a provider or a proxy can produce is exercised on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agentstream.doubles.scripted_model import ScriptedModelServer, running_scripted_model
from agentstream.llm import ChatRequest, Message, ProviderError
from agentstream.processors.model_invoker.providers import OpenAIChatProvider
from agentstream.processors.model_invoker.providers.http1 import HttpClient, HttpError

OK_JSON = b'{"ok": true}'
Respond = Callable[[bytes, asyncio.StreamWriter], Awaitable[bool]]  # request head -> keep the connection?


def ok(body: bytes = OK_JSON, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s" % (
        len(body),
        extra,
        body,
    )


class RawServer:
    """Reads each request (head and content-length body) and lets the test answer it."""

    def __init__(self, respond: Respond, tls: ssl.SSLContext | None = None) -> None:
        self.respond = respond
        self.tls = tls
        self.connections = 0
        self.open = 0
        self.max_open = 0
        self.heads: list[bytes] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
                    0,
                )  # fmt: skip
                await reader.readexactly(length)
                self.heads.append(head)
                if not await self.respond(head, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()

    @classmethod
    async def start(cls, respond: Respond, tls: ssl.SSLContext | None = None) -> tuple[RawServer, asyncio.Server, str]:
        raw = cls(respond, tls)
        server = await asyncio.start_server(raw._serve, "127.0.0.1", 0, ssl=tls)
        port = server.sockets[0].getsockname()[1]
        return raw, server, f"{'https' if tls else 'http'}://127.0.0.1:{port}"


async def answer_ok(head: bytes, writer: asyncio.StreamWriter) -> bool:
    writer.write(ok())
    return True


async def fetch(client: HttpClient, url: str) -> tuple[int, bytes]:
    target = client.target(url, {"content-type": "application/json"})
    response = await client.request(target, b"", b"{}")
    try:
        return response.status, await response.read()
    finally:
        response.close()


def chat(call_id: str | None = None) -> ChatRequest:
    return ChatRequest(
        model="scripted-test",
        messages=(Message("user", "hi"),),
        tools=(),
        max_tokens=64,
        call_id=call_id or f"call-{uuid.uuid4()}",
    )


async def test_keep_alive_reuses_connections_and_caps_them() -> None:
    raw, server, url = await RawServer.start(answer_ok)
    client = HttpClient(max_connections=3)
    try:
        for _ in range(20):
            assert await fetch(client, url) == (200, OK_JSON)
        assert raw.connections == 1

        async def slow(head: bytes, writer: asyncio.StreamWriter) -> bool:
            await asyncio.sleep(0.01)
            writer.write(ok())
            return True

        raw.respond = slow
        results = await asyncio.gather(*(fetch(client, url) for _ in range(30)))
        assert results == [(200, OK_JSON)] * 30
        assert raw.max_open <= 3 and raw.connections <= 3
    finally:
        await client.aclose()
        server.close()


async def test_chunked_close_delimited_and_interim_responses() -> None:
    async def respond(head: bytes, writer: asyncio.StreamWriter) -> bool:
        if b"/chunked" in head:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            for part in (b"hello ", b"chunked ", b"world"):
                await writer.drain()
                await asyncio.sleep(0.005)
                writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            writer.write(b"0\r\n\r\n")
            return True
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end")
        return False

    raw, server, url = await RawServer.start(respond)
    client = HttpClient()
    try:
        assert await fetch(client, url + "/chunked") == (200, b"hello chunked world")
        assert await fetch(client, url + "/chunked") == (200, b"hello chunked world")
        assert raw.connections == 1
        assert await fetch(client, url + "/eof") == (200, b"until the end")
        assert await fetch(client, url + "/chunked") == (200, b"hello chunked world")
        assert raw.connections == 2  # a close-delimited response's connection is not reused
    finally:
        await client.aclose()
        server.close()


async def test_broken_responses_are_errors_and_never_reuse_the_connection() -> None:
    async def respond(head: bytes, writer: asyncio.StreamWriter) -> bool:
        if b"/cut" in head:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
            return False
        if b"/garbage" in head:
            writer.write(b"NOT HTTP AT ALL\r\n\r\n")
            return False
        if b"/huge" in head:
            writer.write(ok(b"x" * 5000))
            return True
        if b"/stall" in head:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
            await asyncio.sleep(0.5)
            return False
        writer.write(ok())
        return True

    raw, server, url = await RawServer.start(respond)
    client = HttpClient(max_response_bytes=1000)
    try:
        with pytest.raises(HttpError, match="closed before the response was complete"):
            await fetch(client, url + "/cut")
        with pytest.raises(HttpError, match="unparseable"):
            await fetch(client, url + "/garbage")
        with pytest.raises(HttpError, match="over 1000 bytes"):
            await fetch(client, url + "/huge")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await fetch(client, url + "/stall")
        before = raw.connections
        assert await fetch(client, url + "/fine") == (200, OK_JSON)
        assert raw.connections == before + 1  # none of the broken connections came back to the pool
    finally:
        await client.aclose()
        server.close()


async def test_large_bodies_read_whole_or_streamed_with_back_pressure() -> None:
    big = bytes(range(256)) * (12 * 1024)  # 3 MiB: past the point where a lagging stream pauses reading

    async def respond(head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for i in range(0, len(big), 65536):
            writer.write(b"%x\r\n%s\r\n" % (len(big[i : i + 65536]), big[i : i + 65536]))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        return True

    raw, server, url = await RawServer.start(respond)
    client = HttpClient()
    try:
        async with asyncio.timeout(10):
            assert await fetch(client, url) == (200, big)
            target = client.target(url, {})
            response = await client.request(target, b"", b"{}")
            received = []
            async for chunk in response.chunks():
                received.append(chunk)
                await asyncio.sleep(0.001)  # a slow reader: the socket is paused, then resumed
            response.close()
            assert b"".join(received) == big
            assert await fetch(client, url) == (200, big)
        assert raw.connections == 1
    finally:
        await client.aclose()
        server.close()


async def test_idle_connections_closed_by_the_server_or_expired_are_not_reused() -> None:
    async def once(head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(ok())
        return False  # closes after answering, without saying so

    raw, server, url = await RawServer.start(once)
    client = HttpClient(keepalive_s=0.2)
    try:
        assert await fetch(client, url) == (200, OK_JSON)
        await asyncio.sleep(0.05)  # the close reaches the client
        assert await fetch(client, url) == (200, OK_JSON)
        assert raw.connections == 2
        raw.respond = answer_ok
        await asyncio.sleep(0.05)
        assert await fetch(client, url) == (200, OK_JSON)
        await asyncio.sleep(0.3)  # idle past keepalive_s: dropped rather than risked
        assert await fetch(client, url) == (200, OK_JSON)
        assert raw.connections == 4
    finally:
        await client.aclose()
        server.close()


async def test_a_control_character_in_a_header_is_refused_before_sending() -> None:
    server = ScriptedModelServer()
    async with running_scripted_model(server=server) as url:
        provider = OpenAIChatProvider(url, None)
        with pytest.raises(ProviderError) as info:
            await provider.complete(chat("evil\r\nx-injected: 1"))
        assert info.value.error_type == "invalid_request" and not info.value.retryable
        assert server.stats()["total_requests"] == 0
        assert (await provider.complete(chat())).text  # the provider is still usable
        await provider.aclose()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "scripted model test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return directory / "cert.pem", directory / "key.pem"


def server_tls(files: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*files)
    return ctx


async def test_tls_verifies_the_server_certificate(tls_files: tuple[Path, Path]) -> None:
    raw, server, url = await RawServer.start(answer_ok, tls=server_tls(tls_files))
    trusting = HttpClient(ssl_context=ssl.create_default_context(cafile=str(tls_files[0])))
    try:
        assert await fetch(trusting, url) == (200, OK_JSON)
        assert await fetch(trusting, url) == (200, OK_JSON)
        assert raw.connections == 1
        provider = OpenAIChatProvider(url, "sk-secret")  # the default roots do not know this CA
        with pytest.raises(ProviderError) as info:
            await provider.complete(chat())
        await provider.aclose()
        assert info.value.retryable and info.value.error_type == "connection"
        assert "SSLCertVerificationError" in str(info.value) and "sk-secret" not in str(info.value)
    finally:
        await trusting.aclose()
        server.close()


class Proxy:
    """A forward proxy: CONNECT tunnels, absolute-form requests re-sent in origin form."""

    def __init__(self, auth: bytes) -> None:
        self.auth = auth
        self.tunnels: list[bytes] = []
        self.forwarded: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
        writer.close()

    async def _forward(self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Each request on the client's connection, re-sent in origin form."""
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                target = head.split(b"\r\n", 1)[0].split(b" ")[1]
                self.forwarded.append(target)
                length = next(
                    (int(v.split(b":")[1]) for v in head.split(b"\r\n") if v.lower().startswith(b"content-length:")), 0
                )
                kept = [v for v in head.split(b"\r\n") if not v.lower().startswith(b"proxy-authorization:")]
                writer.write(b"\r\n".join(kept).replace(target, b"/" + target.split(b"/", 3)[3], 1))
                writer.write(await reader.readexactly(length))
                head = await reader.readuntil(b"\r\n\r\n")
        writer.close()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        head = await reader.readuntil(b"\r\n\r\n")
        method, target, _ = head.split(b"\r\n", 1)[0].split(b" ")
        if b"proxy-authorization: basic " + self.auth not in head.lower():
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n")
            writer.close()
            return
        authority = target if method == b"CONNECT" else target.split(b"/", 3)[2]
        host, port = authority.rsplit(b":", 1)
        up_reader, up_writer = await asyncio.open_connection(host.decode(), int(port))
        self.writers.append(up_writer)
        if method == b"CONNECT":
            self.tunnels.append(target)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            upstream = self._pipe(reader, up_writer)
        else:
            upstream = self._forward(head, reader, up_writer)
        await asyncio.gather(upstream, self._pipe(up_reader, writer))


@pytest.fixture
async def proxy(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Proxy]:
    import base64

    proxy = Proxy(base64.b64encode(b"agent:p@ss").lower())
    server = await asyncio.start_server(proxy.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://agent:p%40ss@127.0.0.1:{port}")
    monkeypatch.setenv("HTTPS_PROXY", f"http://agent:p%40ss@127.0.0.1:{port}")
    yield proxy
    server.close()
    for writer in proxy.writers:
        writer.close()
    await asyncio.sleep(0.05)


async def test_proxies_from_the_environment(proxy: Proxy, tls_files: tuple[Path, Path]) -> None:
    model = ScriptedModelServer(keep_requests=1)
    async with running_scripted_model(server=model) as url:
        provider = OpenAIChatProvider(url, "sk-test")
        assert (await provider.complete(chat())).tool_calls
        assert (await provider.complete(chat())).tool_calls
        await provider.aclose()
    assert proxy.forwarded == [f"{url}/v1/chat/completions".encode()] * 2
    assert model.received[-1].headers["authorization"] == "Bearer sk-test"
    assert "proxy-authorization" not in model.received[-1].headers  # for the proxy only

    raw, server, tls_url = await RawServer.start(answer_ok, tls=server_tls(tls_files))
    client = HttpClient(ssl_context=ssl.create_default_context(cafile=str(tls_files[0])))
    try:
        assert await fetch(client, tls_url) == (200, OK_JSON)
        assert await fetch(client, tls_url) == (200, OK_JSON)
        assert proxy.tunnels == [tls_url.removeprefix("https://").encode()] and raw.connections == 1
    finally:
        await client.aclose()
        server.close()


async def test_no_proxy_bypasses_the_proxy(proxy: Proxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    raw, server, url = await RawServer.start(answer_ok)
    client = HttpClient()
    try:
        assert await fetch(client, url) == (200, OK_JSON)
        assert proxy.forwarded == [] and proxy.tunnels == [] and raw.connections == 1
    finally:
        await client.aclose()
        server.close()
