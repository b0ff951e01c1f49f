"""HTTP plumbing shared by the provider adapters: posting, SSE reading and error mapping.

Every failure leaves here as a `ProviderError`, whose `retryable` flag is the only thing the
retry loop looks at. Messages never carry request headers, and the API key is scrubbed from
anything a provider echoes back (some echo a masked key in 401 bodies).
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson

from agentstream.journal_limits import RESPONSE_TOO_LARGE, model_output_limit
from agentstream.llm import ChatRequest, ChatResult, ProviderError, ToolCall, Usage
from agentstream.processors.model_invoker.providers.http1 import (
    HttpClient,
    HttpError,
    Response,
    ResponseTooLarge,
    Target,
    render_headers,
)
from agentstream.sse import parse_sse

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


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
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
    provider: str, status: int, headers: Mapping[str, str], body: bytes, secret: str | None
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


def response_too_large(provider: str, what: str, limit: int) -> ProviderError:
    """Terminal: the same request would be answered as largely again, by this provider or another,
    and the answer could not be journaled (see agentstream/journal_limits.py). `what` states the
    size, never the contents."""
    return ProviderError(
        f"{provider}: {what} is over the {limit}-byte limit for a model answer "
        "(the journal's record limit less room for the event)",
        retryable=False,
        error_type=RESPONSE_TOO_LARGE,
    )


def error_from_transport(provider: str, exc: BaseException, timeout_s: float, where: str = "") -> ProviderError:
    # Only the exception class is reported (and our own HttpError's text, which never quotes the
    # request): OS and TLS messages can name hosts and paths. `where` is the endpoint as configured,
    # without credentials or query (`safe_location`), so an operator can tell which URL is down.
    at = f" to {where}" if where else ""
    if isinstance(exc, TimeoutError):
        return ProviderError(
            f"{provider}: no complete response{at} within {timeout_s:g}s ({type(exc).__name__})",
            retryable=True,
            error_type="timeout",
        )
    detail = str(exc) if isinstance(exc, HttpError) else type(exc).__name__
    return ProviderError(f"{provider}: connection{at} failed ({detail})", retryable=True, error_type="connection")


def safe_location(url: str) -> str:
    """`scheme://host:port/path` of `url`: no user info, query or fragment (where keys may hide)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


async def iter_sse(response: Response) -> AsyncIterator[tuple[str | None, str]]:
    """Yields (event name, data) per server-sent event (agentstream.sse); a provider's last event
    may end with the connection instead of a blank line, so it is kept."""
    async for message in parse_sse(response.chunks(), keep_unterminated=True):
        yield message.event, message.data


def as_dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not an object")
    return value


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
        client: HttpClient | None,
        name: str,
    ) -> None:
        self.name = name
        self._url = endpoint(base_url, self._path)
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._stream = stream
        # A caller-supplied client is used as is (and left open); otherwise we own one.
        self._owned = client is None
        self._client = client or HttpClient()
        # Everything but the idempotency key is fixed per endpoint: rendered once, here.
        fixed = {"content-type": "application/json", "accept": "application/json", **self._headers()}
        if stream:
            fixed["accept"] = "text/event-stream"
        # A body read whole is capped at what one answer may journal; a stream is read as it comes
        # (the client's own cap bounds it) and what it carried is checked once it is assembled.
        max_body = None if stream else model_output_limit()
        try:
            self._target: Target | None = self._client.target(self._url, fixed, max_body=max_body)
            self._target_problem = ""
        except ValueError as exc:
            # A lane built at run time (a pinned replica) must not raise out of the router: every
            # call fails instead, retryably, so breakers and fallbacks treat it as a dead endpoint.
            self._target, self._target_problem = None, str(exc)

    def _headers(self) -> dict[str, str]:
        raise NotImplementedError

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        raise NotImplementedError

    def _parse(self, data: dict[str, Any], request: ChatRequest, request_id: str | None) -> ChatResult:
        raise NotImplementedError

    async def _parse_stream(self, response: Response, request: ChatRequest, request_id: str | None) -> ChatResult:
        raise NotImplementedError

    async def complete(self, request: ChatRequest) -> ChatResult:
        body = self._body(request)
        body["stream"] = self._stream
        content = orjson.dumps(body)
        try:
            headers = render_headers({"idempotency-key": request.call_id})
        except ValueError as exc:
            raise ProviderError(f"{self.name}: {exc}", retryable=False, error_type="invalid_request") from None
        if self._target is None:
            raise ProviderError(f"{self.name}: {self._target_problem}", retryable=True, error_type="connection")
        try:
            # One deadline for the whole call, connecting and a slow stream included.
            async with asyncio.timeout(self._timeout_s):
                response = await self._client.request(self._target, headers, content)
                try:
                    return await self._exchange(response, request)
                finally:
                    response.close()
        except ResponseTooLarge as exc:
            size = f"{exc.size} bytes" if exc.declared else f"more than {exc.limit} bytes (cut after {exc.size})"
            raise response_too_large(self.name, f"a response body of {size}", exc.limit) from None
        except (HttpError, OSError) as exc:  # TimeoutError is an OSError
            raise error_from_transport(self.name, exc, self._timeout_s, safe_location(self._url)) from None

    async def _exchange(self, response: Response, request: ChatRequest) -> ChatResult:
        if not 200 <= response.status < 300:
            try:
                raw = await response.read()
            except ResponseTooLarge:
                raw = b""  # an error page too large to read: its status says what matters
            raise error_from_status(self.name, response.status, response.headers, raw, self._api_key)
        request_id = response.headers.get(self._request_id_header)
        try:
            if self._stream:
                return await self._parse_stream(response, request, request_id)
            data = as_dict(orjson.loads(await response.read()), "response body")
            return self._parse(data, request, request_id)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            # orjson.JSONDecodeError is a ValueError.
            raise bad_response(self.name, f"{type(exc).__name__}: {exc}", self._api_key) from None

    async def aclose(self) -> None:
        if self._owned:
            await self._client.aclose()


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
