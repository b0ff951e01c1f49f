"""The scripted model's HTTP/1.1 server: asyncio transports and httptools' C request parser.

The fake model answers every call of a benchmark, so its CPU counts in a step's cost on all
processes; uvicorn with Starlette spent 0.35 ms of CPU per model request, this 0.06-0.10 ms (on
uvloop; `bench/model_call_cpu.py`). It serves what
the fake needs: keep-alive, pipelining, content-length and chunked request bodies,
`Expect: 100-continue`, and replies whose body is sent whole or as chunks (server-sent events),
optionally after a delay.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import http
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import cast

import httptools

from agentstream.serving import bind, url_of

MAX_BODY = 64 << 20
SERVER = "agentstream-scripted-model (fake)"


@dataclass(slots=True)
class HttpRequest:
    method: str
    path: str  # without the query string
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass(slots=True)
class HttpReply:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    frames: list[bytes] | None = None  # a streamed body: sent chunked, one chunk per frame
    delay_s: float = 0.0  # held back this long before it is sent (the request is counted at once)


Handler = Callable[[HttpRequest], HttpReply]

_PHRASES: dict[int, bytes] = {s.value: s.phrase.encode() for s in http.HTTPStatus}


def render(reply: HttpReply, keep_alive: bool) -> bytes:
    head = [b"HTTP/1.1 %d %s\r\nserver: %s\r\ncontent-type: %s\r\n" % (
        reply.status, _PHRASES.get(reply.status, b"Unknown"), SERVER.encode(), reply.content_type.encode()
    )]  # fmt: skip
    head += [f"{name}: {value}\r\n".encode("latin-1") for name, value in reply.headers.items()]
    if not keep_alive:
        head.append(b"connection: close\r\n")
    if reply.frames is None:
        head.append(b"content-length: %d\r\n\r\n" % len(reply.body))
        head.append(reply.body)
    else:
        head.append(b"transfer-encoding: chunked\r\n\r\n")
        head += [b"%x\r\n%s\r\n" % (len(frame), frame) for frame in reply.frames if frame]
        head.append(b"0\r\n\r\n")
    return b"".join(head)


class _Connection(asyncio.Protocol):
    """Answers requests in the order they came (pipelined ones wait for the one before)."""

    def __init__(self, handler: Handler, live: set[_Connection]) -> None:
        self._handler = handler
        self._live = live
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._queue: collections.deque[tuple[HttpRequest, bool]] = collections.deque()
        self._held: asyncio.TimerHandle | None = None  # a delayed reply is pending
        self._too_large = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._live.add(self)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._live.discard(self)
        if self._held is not None:
            self._held.cancel()
        self._queue.clear()

    def data_received(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, b"upgrades are not supported")
        except httptools.HttpParserError:
            self._fail(400, b"malformed HTTP request")
        if self._too_large:
            self._fail(413, b"request body too large")

    def _fail(self, status: int, message: bytes) -> None:
        assert self._transport is not None
        if not self._transport.is_closing():
            self._transport.write(render(HttpReply(status, b'{"error": "%s"}' % message), keep_alive=False))
            self._transport.close()

    # -- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url, self._headers, self._body, self._size = b"", {}, [], 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if self._headers.get("expect", "").lower() == "100-continue" and self._transport is not None:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        self._too_large = self._size > MAX_BODY
        if not self._too_large:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if self._too_large:
            return
        method = self._parser.get_method().decode("latin-1")
        path = self._url.decode("latin-1").split("?", 1)[0]
        if not path.startswith("/"):  # absolute-form, as a forward proxy may pass a request on
            path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
        request = HttpRequest(method, path, self._headers, b"".join(self._body))
        self._queue.append((request, self._parser.should_keep_alive()))
        if self._held is None:
            self._drain()

    # -- answering ----------------------------------------------------------------------------

    def _drain(self) -> None:
        transport = self._transport
        while self._queue and transport is not None and not transport.is_closing():
            request, keep_alive = self._queue.popleft()
            try:
                reply = self._handler(request)
            except Exception as exc:  # a bug in the fake must not leave the client hanging
                reply = HttpReply(500, b'{"error": "scripted model failed: %s"}' % type(exc).__name__.encode())
            if reply.delay_s > 0:
                loop = asyncio.get_running_loop()
                self._held = loop.call_later(reply.delay_s, self._release, reply, keep_alive)
                return
            self._send(reply, keep_alive)

    def _release(self, reply: HttpReply, keep_alive: bool) -> None:
        self._held = None
        self._send(reply, keep_alive)
        self._drain()

    def _send(self, reply: HttpReply, keep_alive: bool) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(render(reply, keep_alive))
        if not keep_alive:
            transport.close()


@contextlib.asynccontextmanager
async def serving(handler: Handler, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serves `handler` in this event loop until the block ends; yields the base URL."""
    sock = bind(host, port)
    live: set[_Connection] = set()
    try:
        server = await asyncio.get_running_loop().create_server(
            lambda: _Connection(handler, live), sock=sock, backlog=1024
        )
    except BaseException:
        sock.close()
        raise
    try:
        yield url_of(host, sock)
    finally:
        server.close()
        for conn in list(live):  # idle keep-alive connections would otherwise outlive the server
            conn.close()
        await server.wait_closed()
