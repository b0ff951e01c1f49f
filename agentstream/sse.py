"""The one Server-Sent Events parser: the run API's event streams (the SDK, tests, benches) and
model providers' streamed answers are all read with it.

Incremental over bytes as they arrive (`SseDecoder.feed`), so a message split across reads, or
a line cut between its CR and LF, is put back together; a message is complete at its blank line.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SseMessage:
    data: str  # the data lines, joined with newlines
    event: str | None = None  # the `event:` line, if the message had one
    id: str | None = None  # the `id:` line, if the message had one


class SseDecoder:
    """Bytes in, complete messages out. Comments (`: keep-alive`) and unknown fields are skipped;
    a message with no data line is dropped, as the SSE specification says."""

    __slots__ = ("_data", "_event", "_id", "_rest")

    def __init__(self) -> None:
        self._rest = b""
        self._event: str | None = None
        self._id: str | None = None
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[SseMessage]:
        lines = (self._rest + chunk).splitlines(keepends=True)
        # A last line without its newline (or with a CR whose LF may follow) waits for more bytes.
        self._rest = lines.pop() if lines and not lines[-1].endswith(b"\n") else b""
        out: list[SseMessage] = []
        for raw in lines:
            message = self._line(raw.rstrip(b"\r\n").decode("utf-8", "replace"))
            if message is not None:
                out.append(message)
        return out

    def close(self, *, keep_unterminated: bool = False) -> list[SseMessage]:
        """At the end of the stream: a message cut off before its blank line is dropped (a stream
        that broke mid-message must not deliver half of it), unless `keep_unterminated` (for servers
        that end their last message with the connection instead)."""
        rest, self._rest = self._rest, b""
        out: list[SseMessage] = []
        if rest:
            # The last line, ended by the stream (or by a CR whose LF never came).
            message = self._line(rest.rstrip(b"\r\n").decode("utf-8", "replace"))
            out += [message] if message is not None else []
        last = self._line("") if keep_unterminated else None
        self._event, self._id, self._data = None, None, []
        return out + ([last] if last is not None else [])

    def _line(self, line: str) -> SseMessage | None:
        if not line:
            message = SseMessage("\n".join(self._data), self._event, self._id) if self._data else None
            self._event, self._id, self._data = None, None, []
            return message
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = value
        return None


async def parse_sse(chunks: AsyncIterable[bytes], *, keep_unterminated: bool = False) -> AsyncIterator[SseMessage]:
    """The messages of a byte stream (`httpx.Response.aiter_bytes()`, say), as each completes."""
    decoder = SseDecoder()
    async for chunk in chunks:
        for message in decoder.feed(chunk):
            yield message
    for message in decoder.close(keep_unterminated=keep_unterminated):
        yield message


def parse_sse_bytes(raw: bytes) -> list[SseMessage]:
    """The complete messages of a whole body already read."""
    decoder = SseDecoder()
    return decoder.feed(raw) + decoder.close()
