"""The MCP stdio transport for the servers we start: the SDK's `stdio_client`, with bounds.

`stdio_client` hands the server the executor's own stderr (a log file inside the platform's home,
which a tool could reopen through /proc/self/fd/2 and read) and buffers a stdout line until its
newline however long it grows. Here the server gets three pipes of its own: stdout is read in
chunks and a message longer than `max_message_bytes` is discarded as it arrives (its request, when
its id can be read, is answered with an error saying so); stderr is drained into our log, line by
line, each line cut short and the whole capped, escaped so a tool cannot forge log lines.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
from collections.abc import AsyncIterator

import anyio
import anyio.abc
import mcp_types as types
import orjson
from mcp.client._transport import TransportStreams
from mcp.client.stdio import StdioServerParameters, get_default_environment
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

log = logging.getLogger(__name__)

# Our own bound on one JSON-RPC message; a tool's result is cut to 64,000 characters later anyway.
MAX_MESSAGE_BYTES = 1024 * 1024
STDERR_LINE_BYTES = 2048
STDERR_TOTAL_BYTES = 64 * 1024
MESSAGE_TOO_LARGE = -32001
_CHUNK = 64 * 1024
# Where a reply's id sits: SDK servers write `{"jsonrpc":"2.0","id":...` first.
_ID_PREFIX_BYTES = 512
_ID = re.compile(rb'"id"\s*:\s*(-?\d{1,18}|"(?:[^"\\]|\\.){0,200}")')
_EXIT_GRACE_S = 2.0
_TERM_GRACE_S = 2.0


def _parse(line: bytes) -> SessionMessage | Exception:
    try:
        return SessionMessage(types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    except (ValidationError, ValueError) as exc:
        log.warning("unparseable message from an MCP server: %s", exc)
        return exc


def _too_large(prefix: bytes, limit: int, server: str) -> SessionMessage | None:
    """An error reply in place of an oversized message, if the message's id can be read."""
    found = _ID.search(prefix[:_ID_PREFIX_BYTES])
    if found is None:
        return None
    try:
        request_id = orjson.loads(found.group(1))
    except orjson.JSONDecodeError:
        return None
    message = f"the reply from MCP server {server!r} exceeded the {limit}-byte message limit and was discarded"
    error = types.ErrorData(code=MESSAGE_TOO_LARGE, message=message)
    return SessionMessage(types.JSONRPCError(jsonrpc="2.0", id=request_id, error=error))


class _StdoutReader:
    """Splits stdout into messages without ever holding more than `limit` bytes of one."""

    def __init__(self, limit: int, server: str) -> None:
        self.limit = limit
        self.server = server
        self._buffer = bytearray()
        self._dropping: bytes | None = None  # the first bytes of an oversized message being skipped

    def feed(self, chunk: bytes) -> list[SessionMessage | Exception | None]:
        """The messages `chunk` completes; None stands for an oversized one with no readable id."""
        out: list[SessionMessage | Exception | None] = []
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            if self._dropping is None:
                if len(self._buffer) + len(piece) > self.limit:
                    self._dropping = bytes(self._buffer[:_ID_PREFIX_BYTES] + piece[:_ID_PREFIX_BYTES])
                    self._buffer.clear()
                else:
                    self._buffer += piece
            if end < 0:
                return out
            start = end + 1
            if self._dropping is not None:
                log.warning("MCP server %r sent a message over %d bytes; discarded", self.server, self.limit)
                out.append(_too_large(self._dropping, self.limit, self.server))
                self._dropping = None
            elif self._buffer.strip():
                out.append(_parse(bytes(self._buffer)))
            self._buffer.clear()


class _StderrLog:
    def __init__(self, server: str) -> None:
        self.server = server
        self.logged = 0
        self._line = bytearray()

    def feed(self, chunk: bytes) -> None:
        lines = chunk.split(b"\n")
        for index, piece in enumerate(lines):
            room = STDERR_LINE_BYTES - len(self._line)
            self._line += piece[: max(room, 0)]
            if index < len(lines) - 1:
                self._emit()

    def _emit(self) -> None:
        line, self._line = bytes(self._line), bytearray()
        if self.logged >= STDERR_TOTAL_BYTES or not line.strip():
            return
        self.logged += len(line)
        # %r: the tool's bytes, escaped, can neither end our log line nor pose as another.
        log.info("MCP server %r stderr: %r", self.server, line.decode("utf-8", "replace"))
        if self.logged >= STDERR_TOTAL_BYTES:
            log.warning("MCP server %r: further stderr discarded (over %d bytes)", self.server, STDERR_TOTAL_BYTES)


async def _wait_exit(process: anyio.abc.Process, grace_s: float) -> bool:
    # Polled: Process.wait() would also wait for pipes a surviving descendant may hold open.
    with anyio.move_on_after(grace_s):
        while process.returncode is None:  # noqa: ASYNC110 (no event tells when a process exits)
            await anyio.sleep(0.01)
    return process.returncode is not None


async def _stop(process: anyio.abc.Process) -> None:
    """Closes stdin (the MCP way to ask a stdio server to exit), then SIGTERM, then SIGKILL, each to
    the server's whole process group."""
    with contextlib.suppress(Exception):
        await process.stdin.aclose()  # type: ignore[union-attr]
    for sig, grace in ((None, _EXIT_GRACE_S), (signal.SIGTERM, _TERM_GRACE_S), (signal.SIGKILL, _TERM_GRACE_S)):
        if sig is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, sig)
        if await _wait_exit(process, grace):
            return
    log.warning("MCP server process %d is still alive after SIGKILL; abandoning it", process.pid)


@contextlib.asynccontextmanager
async def bounded_stdio_client(
    server: StdioServerParameters, *, name: str, max_message_bytes: int = MAX_MESSAGE_BYTES
) -> AsyncIterator[TransportStreams]:
    """Starts `server` and yields the (read, write) streams `mcp.Client` takes from a transport."""
    process = await anyio.open_process(
        [server.command, *server.args],
        env=get_default_environment() | (server.env or {}),
        cwd=server.cwd,
        stdin=-1,
        stdout=-1,
        stderr=-1,
        start_new_session=True,  # one process group to signal at shutdown
    )
    read_writer, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, write_reader = anyio.create_memory_object_stream[SessionMessage](0)

    async def pump_stdout() -> None:
        assert process.stdout is not None
        reader = _StdoutReader(max_message_bytes, name)
        delivering = True
        async with read_writer:
            with contextlib.suppress(anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                while True:
                    # Read on after the session has gone, so a server flushing its output can exit.
                    chunk = await process.stdout.receive(_CHUNK)
                    for message in reader.feed(chunk) if delivering else ():
                        if message is None:  # no id to answer: the stream can no longer be trusted
                            log.warning("closing the connection to MCP server %r", name)
                            delivering = False
                            await read_writer.aclose()
                            break
                        try:
                            await read_writer.send(message)
                        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                            delivering = False
                            break

    async def pump_stderr() -> None:
        assert process.stderr is not None
        sink = _StderrLog(name)
        with contextlib.suppress(anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            while True:
                sink.feed(await process.stderr.receive(_CHUNK))

    async def pump_stdin() -> None:
        assert process.stdin is not None
        try:
            async with write_reader:
                async for message in write_reader:
                    data = message.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n"
                    await process.stdin.send(data.encode())
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            await read_writer.aclose()  # the session must see the end instead of waiting forever

    async with anyio.create_task_group() as group:
        group.start_soon(pump_stdout)
        group.start_soon(pump_stderr)
        group.start_soon(pump_stdin)
        try:
            yield read_stream, write_stream
        finally:
            # Bounded, and shielded so a cancelled caller never leaks a live server process.
            with anyio.CancelScope(shield=True):
                read_stream.close()
                write_stream.close()
                await _stop(process)
                for stream in (process.stdout, process.stderr):
                    with contextlib.suppress(Exception):
                        await stream.aclose()  # type: ignore[union-attr]
            group.cancel_scope.cancel()
