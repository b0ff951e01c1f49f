"""The exporting process's HTTP client (agentstream/observability/poster.py) against real sockets:
kept-alive connections, credentials in the URL, a connection the collector closed while idle, and
https verified against a CA file."""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agentstream.observability.otlp import FinishedSpan, OtlpHttpSink, Resource
from agentstream.observability.poster import Poster, without_credentials


class Server:
    """A raw HTTP/1.1 server: answers 200 to each request, or closes the connection after
    `answers_per_connection` answers without saying so (a collector's idle timeout)."""

    def __init__(self, answers_per_connection: int = 1_000) -> None:
        self.answers_per_connection = answers_per_connection
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            for _ in range(self.answers_per_connection):
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))  # fmt: skip
                self.requests.append((head, await reader.readexactly(length)))
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def start(self, tls: ssl.SSLContext | None = None) -> tuple[asyncio.Server, int]:
        server = await asyncio.start_server(self.serve, "127.0.0.1", 0, ssl=tls)
        return server, server.sockets[0].getsockname()[1]


async def test_posts_share_one_connection_and_url_credentials_become_basic_auth() -> None:
    served = Server()
    server, port = await served.start()
    poster = Poster(f"http://us%40er:p%3Aw@127.0.0.1:{port}/base/v1/traces?x=1", {"x-k": "v"}, timeout_s=5)
    try:
        for i in range(5):
            assert await asyncio.to_thread(poster.post, b"body %d" % i) == 200
    finally:
        poster.close()
        server.close()
    assert served.connections == 1 and [body for _, body in served.requests] == [b"body %d" % i for i in range(5)]
    head = served.requests[0][0].decode()
    assert head.startswith("POST /base/v1/traces?x=1 HTTP/1.1\r\n") and "x-k: v" in head
    assert f"Authorization: Basic {base64.b64encode(b'us@er:p:w').decode()}" in head
    assert (
        without_credentials(f"http://us%40er:p%3Aw@127.0.0.1:{port}/v1/traces") == f"http://127.0.0.1:{port}/v1/traces"
    )


async def test_a_connection_closed_while_idle_is_replaced_and_the_batch_still_sent() -> None:
    served = Server(answers_per_connection=1)
    server, port = await served.start()
    poster = Poster(f"http://127.0.0.1:{port}/v1/traces", {}, timeout_s=5)
    try:
        for i in range(3):
            assert await asyncio.to_thread(poster.post, b"%d" % i) == 200
            await asyncio.sleep(0.05)  # the server has closed its side by now
    finally:
        poster.close()
        server.close()
    assert [body for _, body in served.requests] == [b"0", b"1", b"2"] and served.connections == 3


async def test_a_fresh_connection_that_fails_is_an_error_not_a_retry_loop() -> None:
    poster = Poster("http://127.0.0.1:9/v1/traces", {}, timeout_s=1)  # nothing listens on port 9
    with pytest.raises(OSError):
        await asyncio.to_thread(poster.post, b"x")
    with pytest.raises(ValueError, match="not an http"):
        Poster("ftp://user:secret@host/x", {}, timeout_s=1)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ssl.SSLContext]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "otlp test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    directory = tmp_path_factory.mktemp("otlp-tls")
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return directory / "cert.pem", context


async def test_https_is_verified_against_the_configured_ca(tls: tuple[Path, ssl.SSLContext]) -> None:
    ca, context = tls
    served = Server()
    server, port = await served.start(context)
    span = FinishedSpan("s", 1, 2, 0, 1, {}, 1, 2)
    resource = Resource({"service.name": "agentstream-test"}, "agentstream")
    trusting = OtlpHttpSink(f"https://127.0.0.1:{port}", resource, verify=str(ca))
    untrusting = OtlpHttpSink(f"https://127.0.0.1:{port}", resource)  # the system's CAs do not know it
    try:
        assert await asyncio.to_thread(trusting.export, [span])
        assert not await asyncio.to_thread(untrusting.export, [span])
    finally:
        trusting.close()
        untrusting.close()
        server.close()
    assert len(served.requests) == 1 and b'"traceId"' in served.requests[0][1]
