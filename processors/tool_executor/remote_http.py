"""The executor's HTTP client for remote MCP servers, under the same address rules as the sandbox's
egress proxy: each new connection resolves the URL's host once, checks every address, and connects
to the checked address only (TLS still verifies, and SNI and Host still name, the URL's host).
Replies are read with a byte cap, so a hostile server cannot make the executor buffer without end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import httpcore2
import httpx2
from httpcore2 import AnyIOBackend, AsyncNetworkBackend, AsyncNetworkStream
from mcp.client._transport import TransportStreams
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import MCP_DEFAULT_SSE_READ_TIMEOUT, MCP_DEFAULT_TIMEOUT

from agentstream.netguard import AddressRules, Resolver, SystemResolver, resolve_checked

# A tool's result is cut at 64,000 characters later on; a whole JSON-RPC reply (or one SSE event)
# past 1 MiB is a server misbehaving, not a result worth reading to the end.
MAX_REPLY_BYTES = 1024 * 1024


class ReplyTooLarge(httpx2.StreamError):
    # A StreamError, so the MCP client answers the call with a JSON-RPC error naming it (the
    # connection itself is fine) instead of dropping the connection.
    pass


class _CheckedBackend(AsyncNetworkBackend):
    def __init__(self, rules: AddressRules, resolver: Resolver) -> None:
        self.rules = rules
        self.resolver = resolver
        self._inner = AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore2's signature)
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> AsyncNetworkStream:
        try:
            addresses = await resolve_checked(host, port, rules=self.rules, resolver=self.resolver)
        except (ValueError, OSError, TimeoutError) as exc:  # EgressRefused is a ValueError
            raise httpcore2.ConnectError(str(exc)) from exc
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _CappedStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, limit: int, url: str) -> None:
        self.inner = inner
        self.limit = limit
        self.url = url

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self.inner:
            seen += len(chunk)
            if seen > self.limit:
                raise ReplyTooLarge(f"the reply from {self.url} is larger than {self.limit} bytes; not read further")
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


class CheckedTransport(httpx2.AsyncBaseTransport):
    """httpx2's transport with `_CheckedBackend` under its pool, and non-streaming replies capped."""

    def __init__(self, *, rules: AddressRules, resolver: Resolver, max_reply_bytes: int = MAX_REPLY_BYTES) -> None:
        self.max_reply_bytes = max_reply_bytes
        # trust_env=False: an HTTP(S)_PROXY in the executor's environment must not carry a
        # tenant's traffic somewhere these rules did not check.
        self._http = httpx2.AsyncHTTPTransport(trust_env=False)
        self._http._pool = httpcore2.AsyncConnectionPool(
            ssl_context=httpx2.create_ssl_context(), network_backend=_CheckedBackend(rules, resolver)
        )

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._http.handle_async_request(request)
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return response  # an event stream is bounded per event by the MCP client instead
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        response.stream = _CappedStream(response.stream, self.max_reply_bytes, str(request.url))
        return response

    async def aclose(self) -> None:
        await self._http.aclose()


@asynccontextmanager
async def checked_streamable_http(
    url: str, *, rules: AddressRules | None = None, resolver: Resolver | None = None,
    max_reply_bytes: int = MAX_REPLY_BYTES,
) -> AsyncIterator[TransportStreams]:  # fmt: skip
    """The MCP SDK's streamable-HTTP transport over a `CheckedTransport` (rules default to the
    operator's environment, the resolver to the system's)."""
    transport = CheckedTransport(
        rules=rules if rules is not None else AddressRules.from_env(),
        resolver=resolver if resolver is not None else SystemResolver(),
        max_reply_bytes=max_reply_bytes,
    )
    timeout = httpx2.Timeout(MCP_DEFAULT_TIMEOUT, read=MCP_DEFAULT_SSE_READ_TIMEOUT)
    async with (
        httpx2.AsyncClient(transport=transport, timeout=timeout, trust_env=False) as client,
        streamable_http_client(url, http_client=client, max_sse_event_size=max_reply_bytes) as streams,
    ):
        yield streams
