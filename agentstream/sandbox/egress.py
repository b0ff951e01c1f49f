"""The only way out of a sandbox's network namespace: an HTTP proxy on a unix socket that lets
through only connections to allowlisted hosts at addresses the egress rules allow, and records its
recent decisions.

A unix socket, not a TCP port, because a process in a fresh network namespace cannot reach any
host address at all; the sandbox's bootstrap relays its own loopback port to this socket file.

Each request's host is resolved once, every address checked (`agentstream.netguard`: no loopback,
private, link-local, multicast, ...), and the connection made to the checked address itself, so a
DNS answer that changes between check and use (rebinding) changes nothing. Inside a CONNECT tunnel
the TLS server name must be the CONNECT target; a plain-HTTP request's Host must be its URI's host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from agentstream.netguard import (
    AddressRules,
    EgressRefused,
    IPAddress,
    Resolver,
    SystemResolver,
    Unresolvable,
    parse_literal,
    resolve_checked,
)
from agentstream.netguard.sni import ClientHelloError, is_tls_handshake, read_client_hello, server_name
from agentstream.sandbox._relay import close_quietly, relay
from agentstream.sandbox.policy import egress_allowed, normalize_host, parse_allow_entry

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 * 1024
# Connections one sandbox may hold open through its proxy at once (each is a task and two sockets).
MAX_TUNNELS = 32
# Decisions kept in `allowed` / `denied` / `connected`: the recent ones, not a sandbox's whole life.
MAX_RECORDS = 256
# Headers that describe the hop to the proxy, not the request; forwarding them would leak or confuse.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate", "te", "upgrade"}
)
_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    408: "Request Timeout",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class _Refusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _TunnelRefused(Exception):
    """Refused after the tunnel was established: no HTTP answer fits any more, the tunnel just ends."""


class EgressProxy:
    def __init__(
        self,
        path: str | os.PathLike[str],
        allowlist: Iterable[str],
        *,
        max_header_bytes: int = MAX_HEADER_BYTES,
        connect_timeout_s: float = 10.0,
        header_timeout_s: float = 30.0,
        rules: AddressRules | None = None,
        resolver: Resolver | None = None,
        max_tunnels: int = MAX_TUNNELS,
        max_records: int = MAX_RECORDS,
    ) -> None:
        self.path = os.fspath(path)
        self.allowlist = tuple(allowlist)
        for entry in self.allowlist:
            parse_allow_entry(entry)  # fail at construction, not on the first request
        self.max_header_bytes = max_header_bytes
        self.connect_timeout_s = connect_timeout_s
        self.header_timeout_s = header_timeout_s
        # The operator's exemptions come from the platform's environment, never from the tool.
        self.rules = rules if rules is not None else AddressRules.from_env()
        self.resolver: Resolver = resolver if resolver is not None else SystemResolver()
        self.max_tunnels = max_tunnels
        self.max_records = max_records
        self.allowed: list[tuple[str, int]] = []
        self.denied: list[tuple[str, int]] = []
        self.connected: list[tuple[str, int, str]] = []  # host, port, the checked address used
        self.denied_total = 0
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
        if len(self._handlers) >= self.max_tunnels:
            await _reply(writer, 503, f"this sandbox already has {self.max_tunnels} connections open through its proxy")
            await close_quietly(writer)
            return
        self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        except _Refusal as refusal:
            await _reply(writer, refusal.status, refusal.message)
        except _TunnelRefused as refusal:
            log.info("egress tunnel ended: %s", refusal)
        except OSError as exc:
            log.debug("egress connection ended: %s", exc)
        except asyncio.CancelledError:
            # aclose() ends open tunnels this way; on Python 3.11 a cancelled connection callback
            # is logged as an error by asyncio's streams, so the cancellation ends here instead.
            log.debug("egress connection closed with its proxy")
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

            async def tls_name(client: asyncio.StreamReader) -> bytes:
                return await self._check_server_name(client, normalize_host(host), port)

            await relay(reader, writer, up_reader, up_writer, preface=tls_name)
            return
        url = urlsplit(target)
        if url.scheme.lower() != "http" or not url.hostname:
            raise _Refusal(400, "only CONNECT and absolute http:// request URIs are proxied")
        try:
            port = url.port or 80
        except ValueError as exc:
            raise _Refusal(400, "bad port in request URI") from exc
        authority = _authority(url.hostname, url.port)
        self._check_host_header(headers, url.hostname, port, authority)
        up_reader, up_writer = await self._open(url.hostname, port)
        origin = (url.path or "/") + (f"?{url.query}" if url.query else "")
        up_writer.write(_origin_request(method, origin, version, headers, authority))
        await up_writer.drain()
        await relay(reader, writer, up_reader, up_writer, until_client_eof=False)

    def _record(self, records: list[Any], item: Any) -> None:
        records.append(item)
        if len(records) > self.max_records:
            del records[: len(records) - self.max_records]

    def _deny(self, host: str, port: int, status: int, message: str) -> _Refusal:
        self._record(self.denied, (host, port))
        self.denied_total += 1
        log.info("egress denied: %s:%d: %s", host, port, message)
        return _Refusal(status, message)

    async def _open(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host = normalize_host(host)
        if not egress_allowed(self.allowlist, host, port):
            raise self._deny(host, port, 403, f"egress to {host}:{port} is not on the sandbox allowlist")
        try:
            addresses = await resolve_checked(host, port, rules=self.rules, resolver=self.resolver)
        except EgressRefused as exc:
            raise self._deny(host, port, 403, str(exc)) from exc
        except (Unresolvable, OSError, TimeoutError) as exc:
            raise _Refusal(502, f"cannot resolve {host}: {exc or type(exc).__name__}") from exc
        self._record(self.allowed, (host, port))
        return await self._connect(host, port, addresses)

    async def _connect(
        self, host: str, port: int, addresses: list[IPAddress]
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        failure: BaseException | None = None
        for address in addresses:
            try:
                # The checked address itself, never the name: nothing resolves it a second time.
                streams = await asyncio.wait_for(asyncio.open_connection(str(address), port), self.connect_timeout_s)
            except (OSError, TimeoutError) as exc:
                failure = exc
                continue
            self._record(self.connected, (host, port, str(address)))
            return streams
        raise _Refusal(502, f"cannot reach {host}:{port}: {failure or 'no address'}")

    def _check_host_header(self, headers: list[tuple[str, str]], host: str, port: int, authority: str) -> None:
        """A client-chosen Host would reach the checked upstream naming another site (a shared
        front end routes on it); only the URI's own host may be named."""
        named = [value for name, value in headers if name.lower() == "host"]
        if len(named) > 1:
            raise _Refusal(400, "several Host headers")
        if not named:
            return
        try:
            header_host, header_port = _split_host_header(named[0])
        except ValueError as exc:
            raise _Refusal(400, f"bad Host header {named[0]!r}") from exc
        if normalize_host(header_host) != normalize_host(host) or (header_port or 80) != port:
            raise self._deny(
                normalize_host(host), port, 403, f"the Host header names {named[0]}, not the request's host {authority}"
            )

    async def _check_server_name(self, reader: asyncio.StreamReader, host: str, port: int) -> bytes:
        """The tunnel's first bytes: a TLS ClientHello must ask for the CONNECT target (and so an
        allowlisted name), not another site served at the same address. Other protocols pass:
        their bytes go only to the checked address anyway."""
        first = await reader.read(65536)
        if not is_tls_handshake(first):
            return first
        try:
            raw, hello = await asyncio.wait_for(read_client_hello(first, reader.read), self.header_timeout_s)
            name = server_name(hello)
        except (ClientHelloError, TimeoutError) as exc:
            self._deny(host, port, 403, str(exc))
            raise _TunnelRefused(f"CONNECT {host}:{port}: {exc}") from exc
        if name is None:
            if parse_literal(host) is not None:
                return raw  # no SNI for an address (RFC 6066); the address itself was checked
            problem = "the TLS ClientHello names no server"
        elif normalize_host(name) != host:
            problem = f"the TLS server name {name!r} is not the CONNECT target {host!r}"
        elif not egress_allowed(self.allowlist, name, port):
            problem = f"the TLS server name {name!r} is not on the sandbox allowlist"
        else:
            return raw
        self._deny(host, port, 403, problem)
        raise _TunnelRefused(f"CONNECT {host}:{port}: {problem}")


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


def _authority(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def _split_host_header(value: str) -> tuple[str, int | None]:
    text = value.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(value)
        port_text = rest[1:] or None
    else:
        host, sep, port_text_raw = text.partition(":")
        port_text = port_text_raw if sep else None
    if not host or (port_text is not None and not (port_text.isdigit() and 0 < int(port_text) < 65536)):
        raise ValueError(value)
    return host, None if port_text is None else int(port_text)


def _origin_request(method: str, origin: str, version: str, headers: list[tuple[str, str]], authority: str) -> bytes:
    named_by_connection = {
        token.strip().lower() for name, value in headers if name.lower() == "connection" for token in value.split(",")
    }
    kept = [(n, v) for n, v in headers if n.lower() not in _HOP_BY_HOP and n.lower() not in named_by_connection]
    # The Host sent is always the URI's own (the client's was checked to be the same).
    kept = [("Host", authority), *((n, v) for n, v in kept if n.lower() != "host")]
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
