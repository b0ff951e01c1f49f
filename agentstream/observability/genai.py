"""The spans of model and tool calls in the OpenTelemetry GenAI semantic conventions: `chat <model>`
(a client span per model call, routing and retries included) and `execute_tool <tool>`.

Spans carry names, ids, token counts and outcomes. Prompt, answer, tool arguments and results are
added only when the operator opted in (AGENTSTREAM_TRACE_CONTENT), cut to a size, and with
credentials redacted even then: values under secret-looking keys, bearer tokens, provider keys,
private keys, and the platform's own model key wherever it appears.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import orjson

from agentstream.events import (
    LlmCallCompleted,
    LlmCallFailed,
    LlmCallRequested,
    RunEvent,
    ToolCallAuthorized,
    ToolCallCompleted,
)
from agentstream.observability.otlp import CLIENT, INTERNAL, AttributeValue
from agentstream.observability.tracing import TRACING

Call = Callable[[], Awaitable[list[RunEvent]]]
R = TypeVar("R", LlmCallRequested, ToolCallAuthorized)
REDACTED = "[redacted]"

_SECRET_KEY = (
    r"[\w.-]*(?:api[_-]?key|secret|token|passw(?:or)?d|authorization|credential|private[_-]?key|cookie)[\w.-]*"
)
_PATTERNS = (
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {REDACTED}"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.S), REDACTED),
    # provider keys (sk-..., sk-ant-...), AWS access keys, GitHub and Slack tokens, JWTs
    (re.compile(r"\b(?:sk-[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|xox[abpr]-[A-Za-z0-9-]{10,})"),
     REDACTED),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), REDACTED),
    # "token": "...", 'password': '...', api_key=..., in JSON, dict reprs, headers and query strings
    (re.compile(rf"""(?i)(["']?{_SECRET_KEY}["']?\s*[:=]\s*)(?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s,;&}}\]]+)"""),
     rf'\1"{REDACTED}"'),
)  # fmt: skip
_known_secrets: list[str] = []


def never_trace(secret: str | None) -> None:
    """A credential this process holds (the model API key): removed from any content attribute."""
    if secret and len(secret) >= 8 and secret not in _known_secrets:
        _known_secrets.append(secret)


def redact(text: str) -> str:
    for secret in _known_secrets:
        text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def content(text: str, limit: int) -> str:
    """What a content attribute holds: redacted, then cut to `limit` bytes (UTF-8)."""
    text = redact(text)
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[:limit].decode(errors="ignore") + f"... [{len(data) - limit} more bytes]"


def chat_attributes(request: LlmCallRequested, results: list[RunEvent], *, with_content: bool, limit: int) -> dict[str, AttributeValue]:  # fmt: skip
    attributes: dict[str, AttributeValue] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.conversation.id": request.run_id,
        "gen_ai.request.max_tokens": request.max_tokens,
        "agentstream.call.id": request.call_id,
        "agentstream.step": request.step,
    }
    if request.model:
        attributes["gen_ai.request.model"] = request.model
    if request.tier:
        attributes["agentstream.model.tier"] = request.tier
    for event in results:
        if isinstance(event, LlmCallCompleted):
            attributes.update({
                "gen_ai.provider.name": event.provider,
                "gen_ai.response.model": event.model,
                "gen_ai.response.finish_reasons": [event.finish_reason],
                "gen_ai.usage.input_tokens": event.input_tokens,
                "gen_ai.usage.output_tokens": event.output_tokens,
                "gen_ai.usage.cache_read.input_tokens": event.cached_input_tokens,
                "agentstream.attempts": event.attempts,
            })  # fmt: skip
            if with_content:
                attributes["gen_ai.output.messages"] = content(_output_messages(event), limit)
        elif isinstance(event, LlmCallFailed):
            attributes["gen_ai.provider.name"] = event.provider
    if with_content:
        attributes["gen_ai.input.messages"] = content(request.messages_json, limit)
    return attributes


def _output_messages(event: LlmCallCompleted) -> str:
    # The answer as the conventions' one output message: its text and the tool calls it asked for.
    return (f'[{{"role":"assistant","finish_reason":"{event.finish_reason}","text":{_json_str(event.text)},'
            f'"tool_calls":{event.tool_calls_json or "[]"}}}]')  # fmt: skip


def _json_str(text: str) -> str:
    return orjson.dumps(text).decode()


def chat_error(results: list[RunEvent]) -> str | None:
    final = [e for e in results if isinstance(e, LlmCallFailed) and e.final]
    if final:
        return final[-1].error_type or "failed"
    return None if any(isinstance(e, LlmCallCompleted) for e in results) else "no_result"


def tool_attributes(request: ToolCallAuthorized, results: list[RunEvent], *, with_content: bool, limit: int) -> dict[str, AttributeValue]:  # fmt: skip
    attributes: dict[str, AttributeValue] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.conversation.id": request.run_id,
        "gen_ai.tool.name": request.tool,
        "gen_ai.tool.call.id": request.tool_call_id,
        "gen_ai.tool.type": "function",
        "agentstream.call.id": request.call_id,
        "agentstream.step": request.step,
    }
    if request.tool_version:
        attributes["agentstream.tool.version"] = request.tool_version
    if with_content:
        attributes["gen_ai.tool.call.arguments"] = content(request.arguments_json, limit)
        for event in results:
            if isinstance(event, ToolCallCompleted):
                attributes["gen_ai.tool.call.result"] = content(event.content, limit)
    return attributes


def tool_error(results: list[RunEvent]) -> str | None:
    done = [e for e in results if isinstance(e, ToolCallCompleted)]
    if not done:
        return "no_result"
    return "tool_error" if done[-1].is_error else None


async def traced_chat(request: LlmCallRequested, call: Call) -> list[RunEvent]:
    """Performs a model call; with tracing on, as a `chat` span."""
    name = f"chat {request.model}".rstrip()
    return await _traced(request, call, name, CLIENT, chat_attributes, chat_error)


async def traced_tool(request: ToolCallAuthorized, call: Call) -> list[RunEvent]:
    """Performs a tool call; with tracing on, as an `execute_tool` span."""
    return await _traced(request, call, f"execute_tool {request.tool}", INTERNAL, tool_attributes, tool_error)


async def _traced(
    request: R, call: Call, name: str, kind: int,
    attributes_of: Callable[..., dict[str, AttributeValue]], error_of: Callable[[list[RunEvent]], str | None],
) -> list[RunEvent]:  # fmt: skip
    if not TRACING.enabled or not TRACING.sampled(request.run_id):
        return await call()
    start = time.time_ns()
    try:
        results = await call()
    except BaseException as exc:
        # The exception's type only: its message may quote content.
        attributes: dict[str, AttributeValue] = {"gen_ai.operation.name": name.split(" ", 1)[0],
                                                 "gen_ai.conversation.id": request.run_id}  # fmt: skip
        TRACING.call_span(name, kind, request.run_id, start, attributes, type(exc).__name__, [])
        raise
    attributes = attributes_of(request, results, with_content=TRACING.content, limit=TRACING.content_bytes)
    TRACING.call_span(name, kind, request.run_id, start, attributes, error_of(results), results)
    return results
