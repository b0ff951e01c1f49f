"""HTTP plumbing shared by the provider adapters: posting, SSE reading and error mapping.

Every failure leaves here as a `ProviderError`, whose `retryable` flag is the only thing the
retry loop looks at. Messages never carry request headers, and the API key is scrubbed from
anything a provider echoes back (some echo a masked key in 401 bodies).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import importlib.util
import ssl
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson

from agentstream.llm import ChatRequest, ChatResult, ProviderError, ToolCall, Usage

_STATUS_TYPES = {
    401: "authentication",
    403: "permission",
    404: "not_found",
    408: "request_timeout",
    409: "conflict",
    413: "request_too_large",
    429: "rate_limited",
    529: "overloaded",
}

_MAX_MESSAGE = 300

# httpcore looks for the optional `sniffio` on every pool operation (several times per request).
# When it is not installed each look-up is a failed filesystem search, about half the client
# CPU per call at benchmark rates; a None entry makes the import fail at once, as it would anyway.
if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
    sys.modules["sniffio"] = None  # type: ignore[assignment]


def endpoint(base_url: str, path: str) -> str:
    """`path` is relative to `/v1`; a base URL may be given with or without its `/v1`."""
    base = base_url.rstrip("/")
    if not base.endswith("/v1"):
        base += "/v1"
    return f"{base}/{path.lstrip('/')}"


def redact(text: str, secret: str | None) -> str:
    if secret:
        text = text.replace(secret, "[redacted]")
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + "..."


def parse_retry_after(headers: httpx.Headers) -> float | None:
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def is_retryable_status(status: int) -> bool:
    return status in (408, 409, 429) or status >= 500


def error_from_status(
    provider: str, status: int, headers: httpx.Headers, body: bytes, secret: str | None
) -> ProviderError:
    detail = ""
    try:
        parsed = orjson.loads(body)
        err = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(err, dict):
            detail = str(err.get("message") or err.get("type") or "")
        elif isinstance(err, str):  # some OpenAI-compatible servers send a bare string
            detail = err
    except orjson.JSONDecodeError:
        detail = body[:200].decode("utf-8", "replace")
    kind = _STATUS_TYPES.get(status, "server_error" if status >= 500 else "invalid_request")
    retryable = is_retryable_status(status)
    return ProviderError(
        redact(f"{provider}: HTTP {status} ({kind}): {detail}".rstrip(": "), secret),
        retryable=retryable,
        status=status,
        retry_after_s=parse_retry_after(headers) if retryable else None,
        error_type=kind,
    )


def bad_response(provider: str, detail: str, secret: str | None = None) -> ProviderError:
    return ProviderError(
        redact(f"{provider}: unparseable response: {detail}", secret), retryable=False, error_type="bad_response"
    )


def error_from_transport(provider: str, exc: BaseException, timeout_s: float) -> ProviderError:
    # Only the exception class is reported: httpx messages can quote request details.
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return ProviderError(
            f"{provider}: no complete response within {timeout_s:g}s ({type(exc).__name__})",
            retryable=True,
            error_type="timeout",
        )
    return ProviderError(
        f"{provider}: connection failed ({type(exc).__name__})", retryable=True, error_type="connection"
    )


async def iter_sse(response: httpx.Response) -> AsyncIterator[tuple[str | None, str]]:
    """Yields (event name, data) per server-sent event; comments and ids are skipped."""
    event: str | None = None
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = None, []
        elif line.startswith("data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(" ") else value)
        elif line.startswith("event:"):
            event = line[6:].strip()
    if data:
        yield event, "\n".join(data)


def as_dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not an object")
    return value


class ClientPool:
    """Spreads concurrent calls over several small httpx clients.

    httpcore re-scans its whole connection list for every queued request, so one client with
    50 busy connections spends several ms of CPU per call. Clients are added only when every
    existing one already has `per_client` calls in flight, so sequential use stays on one.
    """

    def __init__(self, timeout_s: float, *, per_client: int = 8, max_clients: int = 16) -> None:
        self._timeout = httpx.Timeout(timeout_s)
        self._per_client = per_client
        self._max_clients = max_clients
        self._ssl: ssl.SSLContext | None = None
        self._in_flight: dict[httpx.AsyncClient, int] = {}

    def _new_client(self) -> httpx.AsyncClient:
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context()  # ~50 ms each; share one across clients
        limit = 2 * self._per_client
        return httpx.AsyncClient(
            timeout=self._timeout,
            verify=self._ssl,
            limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
        )

    @contextlib.contextmanager
    def lease(self) -> Iterator[httpx.AsyncClient]:
        client = min(self._in_flight, key=self._in_flight.__getitem__, default=None)
        if client is None or (self._in_flight[client] >= self._per_client and len(self._in_flight) < self._max_clients):
            client = self._new_client()
            self._in_flight[client] = 0
        self._in_flight[client] += 1
        try:
            yield client
        finally:
            if client in self._in_flight:  # absent once aclose() has run
                self._in_flight[client] -= 1

    async def aclose(self) -> None:
        clients, self._in_flight = list(self._in_flight), {}
        for client in clients:
            await client.aclose()


class HttpProvider:
    """Posts one JSON request per call; subclasses supply the wire mapping."""

    name: str
    _path: str
    _request_id_header: str

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        timeout_s: float,
        stream: bool,
        client: httpx.AsyncClient | None,
        name: str,
    ) -> None:
        self.name = name
        self._url = endpoint(base_url, self._path)
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._stream = stream
        # A caller-supplied client is used as is (and left open); otherwise we pool our own.
        self._client = client
        self._pool = ClientPool(timeout_s) if client is None else None

    def _headers(self, request: ChatRequest) -> dict[str, str]:
        raise NotImplementedError

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        raise NotImplementedError

    def _parse(self, data: dict[str, Any], request: ChatRequest, request_id: str | None) -> ChatResult:
        raise NotImplementedError

    async def _parse_stream(self, response: httpx.Response, request: ChatRequest, request_id: str | None) -> ChatResult:
        raise NotImplementedError

    async def complete(self, request: ChatRequest) -> ChatResult:
        body = self._body(request)
        body["stream"] = self._stream
        content = orjson.dumps(body)
        headers = {"content-type": "application/json", "idempotency-key": request.call_id}
        headers.update(self._headers(request))
        try:
            # One deadline for the whole call: httpx's timeout is per read, which a slow stream
            # would never trip.
            async with asyncio.timeout(self._timeout_s):
                return await self._send(content, headers, request)
        except (httpx.TimeoutException, TimeoutError, httpx.TransportError) as exc:
            raise error_from_transport(self.name, exc, self._timeout_s) from None

    async def _send(self, content: bytes, headers: dict[str, str], request: ChatRequest) -> ChatResult:
        if self._pool is None:
            assert self._client is not None
            return await self._exchange(self._client, content, headers, request)
        with self._pool.lease() as client:
            return await self._exchange(client, content, headers, request)

    async def _exchange(
        self, client: httpx.AsyncClient, content: bytes, headers: dict[str, str], request: ChatRequest
    ) -> ChatResult:
        req = client.build_request("POST", self._url, content=content, headers=headers, timeout=self._timeout_s)
        response = await client.send(req, stream=True)
        try:
            if not 200 <= response.status_code < 300:
                raw = await response.aread()
                raise error_from_status(self.name, response.status_code, response.headers, raw, self._api_key)
            request_id = response.headers.get(self._request_id_header)
            try:
                if self._stream:
                    return await self._parse_stream(response, request, request_id)
                data = as_dict(orjson.loads(await response.aread()), "response body")
                return self._parse(data, request, request_id)
            except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
                # orjson.JSONDecodeError is a ValueError.
                raise bad_response(self.name, f"{type(exc).__name__}: {exc}", self._api_key) from None
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()


def chat_result(
    text: str,
    calls: tuple[ToolCall, ...],
    usage: Usage,
    raw_finish: str,
    finish_map: dict[str, str],
    model: str,
    request_id: str | None,
) -> ChatResult:
    """Both adapters report finish reasons in one vocabulary; the provider's own value is kept."""
    return ChatResult(
        text=text,
        tool_calls=calls,
        usage=usage,
        finish_reason=finish_map.get(raw_finish, raw_finish),
        model=model,
        provider_request_id=request_id,
        extra={"raw_finish_reason": raw_finish},
    )
