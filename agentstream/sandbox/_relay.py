"""Copies bytes both ways between a client's streams and an upstream's."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

_CHUNK = 64 * 1024


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(_CHUNK):
            writer.write(chunk)
            await writer.drain()
    except OSError:
        pass  # a reset ends this direction like EOF does; relay() closes both sides afterwards
    finally:
        # Half-close, so the far side sees EOF while its replies can still flow back.
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()


async def _upload(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    preface: Callable[[asyncio.StreamReader], Awaitable[bytes]] | None,
) -> None:
    if preface is not None:
        first = await preface(reader)
        if first:
            writer.write(first)
            await writer.drain()
    await _pump(reader, writer)


async def relay(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    upstream_reader: asyncio.StreamReader,
    upstream_writer: asyncio.StreamWriter,
    *,
    until_client_eof: bool = True,
    preface: Callable[[asyncio.StreamReader], Awaitable[bytes]] | None = None,
) -> None:
    """Relays until both directions end, or with `until_client_eof=False` until the upstream's does:
    a keep-alive client would otherwise hold a finished exchange open for as long as it idles.

    `preface` reads (and may refuse, by raising) the client's first bytes before any of them go
    upstream, while the upstream's bytes already flow back (a server may speak first)."""
    upload = asyncio.ensure_future(_upload(client_reader, upstream_writer, preface))
    download = asyncio.ensure_future(_pump(upstream_reader, client_writer))
    try:
        if until_client_eof:
            await asyncio.gather(upload, download)
        else:
            await download
    finally:
        upload.cancel()
        download.cancel()
        await asyncio.gather(upload, download, return_exceptions=True)
        for writer in (client_writer, upstream_writer):
            await close_quietly(writer)


async def close_quietly(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
