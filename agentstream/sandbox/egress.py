"""The only way out of a sandbox's network namespace: an HTTP proxy on a unix socket that lets
through only connections to allowlisted hosts, and records every decision it makes.

A unix socket, not a TCP port, because a process in a fresh network namespace cannot reach any
host address at all; the sandbox's bootstrap relays its own loopback port to this socket file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable
from urllib.parse import urlsplit

from agentstream.sandbox._relay import close_quietly, relay
from agentstream.sandbox.policy import egress_allowed, normalize_host, parse_allow_entry

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 * 1024
# Headers that describe the hop to the proxy, not the request; forwarding them would leak or confuse.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate", "te", "upgrade"}
)
_REASONS = {400: "Bad Request", 403: "Forbidden", 408: "Request Timeout", 502: "Bad Gateway"}


class _Refusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class EgressProxy:
    def __init__(
        self,
        path: str | os.PathLike[str],
        allowlist: Iterable[str],
        *,
        max_header_bytes: int = MAX_HEADER_BYTES,
        connect_timeout_s: float = 10.0,
        header_timeout_s: float = 30.0,
    ) -> None:
        self.path = os.fspath(path)
        self.allowlist = tuple(allowlist)
        for entry in self.allowlist:
            parse_allow_entry(entry)  # fail at construction, not on the first request
        self.max_header_bytes = max_header_bytes
        self.connect_timeout_s = connect_timeout_s
        self.header_timeout_s = header_timeout_s
        self.allowed: list[tuple[str, int]] = []
        self.denied: list[tuple[str, int]] = []
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("EgressProxy is already started")
        self._server = await asyncio.start_unix_server(self._handle, path=self.path, limit=self.max_header_bytes)
        # The socket's directory should already be private; this keeps it so if it is not.
        os.chmod(self.path, 0o600)

    async def aclose(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        # Server.close() leaves accepted connections open, so open tunnels are ended here.
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        except _Refusal as refusal:
            await _reply(writer, refusal.status, refusal.message)
        except OSError as exc:
            log.debug("egress connection ended: %s", exc)
        finally:
            self._handlers.discard(task)
            await close_quietly(writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.header_timeout_s)
        except asyncio.LimitOverrunError as exc:
            raise _Refusal(400, f"request head larger than {self.max_header_bytes} bytes") from exc
        except asyncio.IncompleteReadError:
            return
        except TimeoutError as exc:
            raise _Refusal(408, "request head not received in time") from exc
        request_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _Refusal(400, "malformed request line")
        method, target, version = parts
        headers = _parse_headers(header_lines)
        if method.upper() == "CONNECT":
            host, port = _split_authority(target)
            up_reader, up_writer = await self._open(host, port)
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            await writer.drain()
            await relay(reader, writer, up_reader, up_writer)
            return
        url = urlsplit(target)
        if url.scheme.lower() != "http" or not url.hostname:
            raise _Refusal(400, "only CONNECT and absolute http:// request URIs are proxied")
        try:
            port = url.port or 80
        except ValueError as exc:
            raise _Refusal(400, "bad port in request URI") from exc
        up_reader, up_writer = await self._open(url.hostname, port)
        origin = (url.path or "/") + (f"?{url.query}" if url.query else "")
        up_writer.write(_origin_request(method, origin, version, headers, url.netloc))
        await up_writer.drain()
        await relay(reader, writer, up_reader, up_writer, until_client_eof=False)

    async def _open(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host = normalize_host(host)
        if not egress_allowed(self.allowlist, host, port):
            self.denied.append((host, port))
            log.info("egress denied: %s:%d", host, port)
            raise _Refusal(403, f"egress to {host}:{port} is not on the sandbox allowlist")
        self.allowed.append((host, port))
        try:
            return await asyncio.wait_for(asyncio.open_connection(host, port), self.connect_timeout_s)
        except (OSError, TimeoutError) as exc:
            raise _Refusal(502, f"cannot reach {host}:{port}: {exc or type(exc).__name__}") from exc


def _parse_headers(lines: list[str]) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for line in lines:
        name, sep, value = line.partition(":")
        # Folded or nameless lines are obsolete syntax that proxies disagree on, a smuggling vector.
        if not sep or not name or name != name.strip():
            raise _Refusal(400, "malformed header line")
        headers.append((name, value.strip()))
    return headers


def _split_authority(authority: str) -> tuple[str, int]:
    host, sep, port_text = authority.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _Refusal(400, "CONNECT needs host:port")
    return host.strip("[]"), int(port_text)


def _origin_request(method: str, origin: str, version: str, headers: list[tuple[str, str]], netloc: str) -> bytes:
    named_by_connection = {
        token.strip().lower() for name, value in headers if name.lower() == "connection" for token in value.split(",")
    }
    kept = [(n, v) for n, v in headers if n.lower() not in _HOP_BY_HOP and n.lower() not in named_by_connection]
    if not any(n.lower() == "host" for n, _ in kept):
        kept.insert(0, ("Host", netloc))
    # Past the head we only splice bytes, so a keep-alive client's next request (perhaps for another
    # host) would reach this upstream unchecked; closing after one exchange makes it come back here.
    kept.append(("Connection", "close"))
    lines = [f"{method} {origin} {version}", *(f"{n}: {v}" for n, v in kept), "", ""]
    return "\r\n".join(lines).encode("latin-1")


async def _reply(writer: asyncio.StreamWriter, status: int, message: str) -> None:
    body = (message + "\n").encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    with contextlib.suppress(OSError):
        writer.write(head.encode("latin-1") + body)
        await writer.drain()
