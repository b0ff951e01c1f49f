"""One HTTP/1.1 connection (an asyncio protocol fed through httptools' response parser) and the
response it is reading. Used through `http1.HttpClient`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import cast

import httptools

_PAUSE_AT = 1 << 20  # buffered body bytes past which the socket is not read until the caller catches up


class HttpError(Exception):
    """A transport-level failure: no usable response. Messages never quote request contents."""


class ResponseTooLarge(HttpError):
    """The response body is over the request's limit: declared so (`content-length`), or cut
    once more than `limit` bytes arrived. Nothing of the body is quoted."""

    def __init__(self, size: int, limit: int, *, declared: bool) -> None:
        how = "declared by its content-length" if declared else "read before it was cut"
        super().__init__(f"response body over {limit} bytes ({size} bytes {how})")
        self.size = size
        self.limit = limit
        self.declared = declared


class Response:
    """A response whose headers are in and whose body arrives as the connection reads it."""

    __slots__ = (
        "_buffered",
        "_chunks",
        "_conn",
        "_error",
        "_on_close",
        "_waiter",
        "closed",
        "complete",
        "headers",
        "headers_in",
        "limit",
        "received",
        "reusable",
        "status",
        "streaming",
        "until_eof",
    )

    def __init__(self, conn: Connection, on_close: Callable[[], None], limit: int) -> None:
        self._conn = conn
        self.limit = limit  # body bytes at most; past it the response fails with ResponseTooLarge
        self._on_close = on_close
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.status = 0
        self.headers: dict[str, str] = {}  # lower-case names; repeated fields joined with ", "
        self.headers_in = False
        self.complete = False
        self.reusable = False
        self.until_eof = False  # neither content-length nor chunked: the body ends when the connection does
        self.received = 0
        self.closed = False
        self.streaming = False  # read by chunks(): the socket pauses while the caller lags behind

    # -- fed by the connection ---------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        self.received += len(chunk)
        if self.received > self.limit:
            self._fail(ResponseTooLarge(self.received, self.limit, declared=False))
            self._conn.abort()
            return
        if self.streaming and self._buffered > _PAUSE_AT:
            self._conn.pause()
        self._wake()

    def _finish(self, reusable: bool) -> None:
        if self._error is not None:  # e.g. over the size limit: the rest of the body was ignored
            return
        self.complete = True
        self.reusable = reusable
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if not self.complete and self._error is None:
            self._error = error
        self._wake()

    # -- read by the caller ------------------------------------------------------------------

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def wait_headers(self) -> None:
        while not self.headers_in:
            if self._error is not None:
                raise self._error
            await self._wait()

    async def read(self) -> bytes:
        while not self.complete:
            if self._error is not None:
                raise self._error
            await self._wait()
        self._buffered = 0
        body = b"".join(self._chunks)
        self._chunks = []
        return body

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives."""
        self.streaming = True
        while True:
            if self._chunks:
                chunks, self._chunks, self._buffered = self._chunks, [], 0
                self._conn.resume()
                for chunk in chunks:
                    yield chunk
            elif self.complete:
                return
            elif self._error is not None:
                raise self._error
            else:
                await self._wait()

    def close(self) -> None:
        """Returns the connection to the pool if the response was read whole; drops it otherwise."""
        if self.closed:
            return
        self.closed = True
        self._conn.finished(self.complete and self.reusable and self._error is None)
        self._on_close()


class Connection(asyncio.Protocol):
    def __init__(self, origin: tuple[str, str, int], on_lost: Callable[[Connection], None]) -> None:
        self.origin = origin
        self.closed = False
        self.transport: asyncio.Transport | None = None
        self._on_lost = on_lost
        self._on_done: Callable[[Connection], None] | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._response: Response | None = None
        self._paused = False

    async def send(
        self, data: bytes, limit: int, on_close: Callable[[], None], on_done: Callable[[Connection], None]
    ) -> Response:
        """Writes a request and waits for its response's headers. `limit`: the most body bytes
        accepted. `on_close` runs exactly once, when the response is closed or the request fails;
        `on_done` gets the connection back."""
        response = self._response = Response(self, on_close, limit)
        self._on_done = on_done
        try:
            if self.closed or self.transport is None:
                raise HttpError("the connection closed before the request was sent")
            self.transport.write(data)
            await response.wait_headers()
        except BaseException:
            response.close()
            raise
        return response

    def finished(self, reusable: bool) -> None:
        self._response = None
        self.resume()
        on_done, self._on_done = self._on_done, None
        if not reusable or self.closed:
            self.abort()
        elif on_done is not None:
            on_done(self)

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()  # connection_lost follows on the next loop iteration
        self.closed = True

    def pause(self) -> None:
        if not self._paused and self.transport is not None and not self.closed:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        response = self._response
        if response is None or response.complete:
            # Bytes nobody asked for: the stream can no longer be trusted for a next request.
            self.abort()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            response._fail(HttpError(f"unparseable HTTP response ({type(exc).__name__})"))
            self.abort()

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._on_lost(self)
        response = self._response
        if response is not None and not response.complete:
            if response.headers_in and response.until_eof and exc is None:
                response._finish(reusable=False)
            else:
                response._fail(HttpError("the connection closed before the response was complete"))

    # -- httptools callbacks --------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._response is not None
        headers = self._response.headers
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def on_headers_complete(self) -> None:
        response = self._response
        assert response is not None
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            response.headers = {}  # an interim response (100 Continue, 103 Early Hints): the real one follows
            return
        response.status = status
        headers = response.headers
        response.until_eof = (
            "content-length" not in headers
            and "chunked" not in headers.get("transfer-encoding", "").lower()
            and status not in (204, 304)
        )
        response.headers_in = True
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > response.limit:
            # Refused before a byte of the body is read; the status and headers stay readable.
            response._fail(ResponseTooLarge(int(declared), response.limit, declared=True))
            self.abort()
            return
        response._wake()

    def on_body(self, body: bytes) -> None:
        assert self._response is not None
        self._response._feed(body)

    def on_message_complete(self) -> None:
        response = self._response
        assert response is not None
        if response.headers_in:  # not the end of an interim response
            response._finish(reusable=self._parser.should_keep_alive())
