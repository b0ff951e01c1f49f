"""A lean HTTP/1.1 client for provider calls: asyncio transports and httptools' C parser.

The invoker's httpx client cost about 1.0 ms of CPU per model call at one call in flight and 1.6 ms
at 200 (its pool, h11's pure-Python parser, anyio, per-request URL, header and timeout objects);
this one costs 0.15 and 0.08 ms, aiohttp 0.24 and 0.16 (`bench/model_call_cpu.py`). This client does what a provider call needs and nothing more: one request line and headers
rendered from bytes prepared once per endpoint, keep-alive connections pooled per origin, TLS,
chunked and streamed (SSE) responses, and HTTP(S)_PROXY / NO_PROXY from the environment (CONNECT
tunnels for https, absolute-form for http). No redirects, cookies, compression or HTTP/2: provider
APIs need none of them. Deadlines are the caller's (`asyncio.timeout` around the whole call).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import ssl
import urllib.parse
import urllib.request
from dataclasses import dataclass

from agentstream.processors.model_invoker.providers.http1_conn import Connection, HttpError, Response, ResponseTooLarge
from agentstream.settings import TlsSettings, once

__all__ = ["HttpClient", "HttpError", "Response", "ResponseTooLarge", "Target"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _check_header(name: str, value: str) -> None:
    # A CR or LF in a value would start a new header (or a new request) on the wire.
    if any(c in value for c in "\r\n\0") or any(c in name for c in "\r\n\0: "):
        raise ValueError(f"header {name!r} has a control character or separator in its name or value")


def render_headers(headers: dict[str, str]) -> bytes:
    for name, value in headers.items():
        _check_header(name, value)
    return "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode("latin-1")


@dataclass(frozen=True, slots=True)
class _Proxy:
    scheme: str
    host: str
    port: int
    auth: bytes  # a rendered proxy-authorization header line, or b""


@dataclass(frozen=True, slots=True)
class Target:
    """One endpoint, resolved once: where to connect and the fixed head of every request to it."""

    scheme: str
    host: str
    port: int
    proxy: _Proxy | None
    head: bytes  # request line and the headers every request to this endpoint carries
    origin: tuple[str, str, int]  # the connection pool's key
    max_body: int  # the most response body bytes accepted (ResponseTooLarge past it)


def _proxy_for(scheme: str, host: str, port: int) -> _Proxy | None:
    proxies = urllib.request.getproxies_environment()
    url = proxies.get(scheme) or proxies.get("all")
    if not url or urllib.request.proxy_bypass(f"{host}:{port}"):
        return None
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"proxy {parts.scheme}://{parts.hostname} from the environment is not supported (http/https)")
    auth = b""
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        secret = base64.b64encode(f"{user}:{urllib.parse.unquote(parts.password or '')}".encode()).decode()
        auth = f"proxy-authorization: Basic {secret}\r\n".encode()
    return _Proxy(parts.scheme, parts.hostname, parts.port or _DEFAULT_PORTS[parts.scheme], auth)


def default_ssl_context() -> ssl.SSLContext:
    """As httpx builds it: SSL_CERT_FILE / SSL_CERT_DIR when set, else certifi's roots."""
    tls = once(TlsSettings)
    if tls.cert_file is not None:
        ctx = ssl.create_default_context(cafile=tls.cert_file)
    elif tls.cert_dir is not None:
        ctx = ssl.create_default_context(capath=tls.cert_dir)
    else:
        try:
            import certifi

            ctx = ssl.create_default_context(cafile=certifi.where())
        except ImportError:
            ctx = ssl.create_default_context()
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class _ConnectReply(asyncio.Protocol):
    """Reads a proxy's answer to CONNECT: its status line, once the head is complete."""

    def __init__(self) -> None:
        self.reply: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._head = b""

    def data_received(self, data: bytes) -> None:
        self._head += data
        if b"\r\n\r\n" in self._head and not self.reply.done():
            self.reply.set_result(self._head.split(b"\r\n", 1)[0].decode("latin-1"))
        elif len(self._head) > 16384 and not self.reply.done():
            self.reply.set_exception(HttpError("the proxy's answer to CONNECT has no end"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.reply.done():
            self.reply.set_exception(HttpError("the proxy closed the connection during CONNECT"))


class _Slots:
    """At most `limit` connections per origin; callers past it wait in arrival order."""

    __slots__ = ("busy", "limit", "waiters")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.busy = 0
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self) -> None:
        if self.busy < self.limit and not self.waiters:
            self.busy += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await waiter  # the releaser hands its slot over: `busy` is not decremented in between
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot we will not use: pass it on
            else:
                self.waiters.remove(waiter)
            raise

    def release(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.busy -= 1


class HttpClient:
    """Keep-alive connections per origin. One client may serve many endpoints and tasks at once
    (all on one event loop)."""

    def __init__(
        self,
        *,
        max_connections: int = 256,
        keepalive_s: float = 5.0,
        max_response_bytes: int = 64 << 20,  # for targets that set no limit of their own
        ssl_context: ssl.SSLContext | None = None,
        trust_env: bool = True,
        user_agent: str = "agentstream",
    ) -> None:
        self._max_connections = max_connections
        # An idle connection older than this is dropped rather than reused: servers close idle
        # keep-alive connections (uvicorn after 5 s by default), and a request written into one
        # that is closing fails. The same default as httpx.
        self._keepalive_s = keepalive_s
        self._max_response_bytes = max_response_bytes
        self._ssl = ssl_context
        self._trust_env = trust_env
        self._user_agent = user_agent
        self._idle: dict[tuple[str, str, int], list[tuple[float, Connection]]] = {}
        self._slots: dict[tuple[str, str, int], _Slots] = {}
        self._open: set[Connection] = set()
        self.closed = False

    def target(self, url: str, headers: dict[str, str], *, method: str = "POST", max_body: int | None = None) -> Target:
        """Resolves `url` once (its proxy included) with the headers sent on every request.
        `max_body`: the most response body bytes accepted, else the client's `max_response_bytes`."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
        host_header = parts.netloc.rsplit("@", 1)[-1]
        proxy = _proxy_for(parts.scheme, parts.hostname, port) if self._trust_env else None
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        if proxy is not None and parts.scheme == "http":
            path = f"http://{host_header}{path}"  # absolute-form: a forward proxy needs the origin
        fixed = {"host": host_header, "user-agent": self._user_agent, "accept-encoding": "identity", **headers}
        head = f"{method} {path} HTTP/1.1\r\n".encode("latin-1") + render_headers(fixed)
        if proxy is not None and parts.scheme == "http":
            head += proxy.auth
        limit = self._max_response_bytes if max_body is None else max_body
        return Target(parts.scheme, parts.hostname, port, proxy, head, (parts.scheme, parts.hostname, port), limit)

    async def request(self, target: Target, headers: bytes, body: bytes) -> Response:
        """Sends one request and returns once the response's headers are in; the caller must
        `close()` the response (a fully read one returns its connection to the pool).
        `headers`: per-request lines from `render_headers`."""
        if self.closed:
            raise HttpError("the HTTP client is closed")
        slots = self._slots.get(target.origin)
        if slots is None:
            slots = self._slots[target.origin] = _Slots(self._max_connections)
        await slots.acquire()
        try:
            conn = self._reuse(target) or await self._connect(target)
        except BaseException:
            slots.release()
            raise
        head = b"%scontent-length: %d\r\n%s\r\n" % (target.head, len(body), headers)
        return await conn.send(head + body, target.max_body, slots.release, self._done)

    def _reuse(self, target: Target) -> Connection | None:
        idle = self._idle.get(target.origin)
        if not idle:
            return None
        now = asyncio.get_running_loop().time()
        while idle:
            since, conn = idle.pop()  # the most recently used: the least likely to be closing
            if not conn.closed and now - since < self._keepalive_s:
                return conn
            conn.abort()
        return None

    def _done(self, conn: Connection) -> None:
        if self.closed:
            conn.abort()
        else:
            self._idle.setdefault(conn.origin, []).append((asyncio.get_running_loop().time(), conn))

    async def _connect(self, target: Target) -> Connection:
        loop = asyncio.get_running_loop()
        conn = Connection(target.origin, self._open.discard)
        tls = target.scheme == "https"
        if tls and self._ssl is None:
            self._ssl = default_ssl_context()  # ~50 ms: built on first use, then shared
        proxy = target.proxy
        if proxy is None:
            await loop.create_connection(
                lambda: conn, target.host, target.port, ssl=self._ssl if tls else None,
                server_hostname=target.host if tls else None,
            )  # fmt: skip
        elif not tls:
            await loop.create_connection(lambda: conn, proxy.host, proxy.port, ssl=self._proxy_ssl(proxy))
        else:
            await self._tunnel(conn, target, proxy)
        self._open.add(conn)
        return conn

    def _proxy_ssl(self, proxy: _Proxy) -> ssl.SSLContext | None:
        if proxy.scheme != "https":
            return None
        if self._ssl is None:
            self._ssl = default_ssl_context()
        return self._ssl

    async def _tunnel(self, conn: Connection, target: Target, proxy: _Proxy) -> None:
        loop = asyncio.get_running_loop()
        handshake = _ConnectReply()
        transport, _ = await loop.create_connection(
            lambda: handshake, proxy.host, proxy.port, ssl=self._proxy_ssl(proxy),
            server_hostname=proxy.host if proxy.scheme == "https" else None,
        )  # fmt: skip
        try:
            authority = f"{target.host}:{target.port}" if ":" not in target.host else f"[{target.host}]:{target.port}"
            transport.write(f"CONNECT {authority} HTTP/1.1\r\nhost: {authority}\r\n".encode() + proxy.auth + b"\r\n")
            status_line = await handshake.reply
            fields = status_line.split(" ", 2)
            if len(fields) < 2 or not fields[1].startswith("2"):
                raise HttpError(f"proxy {proxy.host}:{proxy.port} refused the tunnel: {status_line[:100]!r}")
            assert self._ssl is not None
            tls_transport = await loop.start_tls(transport, handshake, self._ssl, server_hostname=target.host)
        except BaseException:
            transport.abort()
            raise
        if tls_transport is None:  # the loop gives None only if the transport was closed meanwhile
            raise HttpError("the proxy closed the tunnel during the TLS handshake")
        tls_transport.set_protocol(conn)
        conn.connection_made(tls_transport)

    async def aclose(self) -> None:
        self.closed = True
        for conn in list(self._open):
            conn.abort()
        self._open.clear()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports' connection_lost callbacks run
