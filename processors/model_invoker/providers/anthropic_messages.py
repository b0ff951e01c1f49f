"""Adapter for the Anthropic Messages API."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NoReturn

import orjson

from agentstream.llm import ChatRequest, ChatResult, Message, ProviderError, ToolCall, Usage
from agentstream.processors.model_invoker.providers._http import HttpProvider, as_dict, chat_result, iter_sse
from agentstream.processors.model_invoker.providers.http1 import HttpClient, Response

# Mapped onto the OpenAI-style vocabulary so callers need not know which provider answered.
_FINISH = {
    "tool_use": "tool_calls",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "refusal": "content_filter",
}
_RETRYABLE_STREAM_ERRORS = {"overloaded_error", "api_error", "rate_limit_error", "timeout_error"}


def _tool_input(arguments_json: str) -> dict[str, Any]:
    """The API only accepts an object here; a malformed call from history is kept, wrapped, so
    the model can still see what it sent."""
    try:
        parsed = orjson.loads(arguments_json)
    except orjson.JSONDecodeError:
        return {"_raw": arguments_json}
    return parsed if isinstance(parsed, dict) else {"_raw": arguments_json}


def _blocks(m: Message) -> list[dict[str, Any]]:
    if m.role == "tool":
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": m.tool_call_id or "", "content": m.content}
        if m.is_error:
            block["is_error"] = True
        return [block]
    # The API rejects empty text blocks.
    out: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
    for c in m.tool_calls:
        out.append({"type": "tool_use", "id": c.id, "name": c.name, "input": _tool_input(c.arguments_json)})
    return out


def _conversation(messages: tuple[Message, ...]) -> tuple[str, list[dict[str, Any]]]:
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            system.append(m.content)
            continue
        role = "assistant" if m.role == "assistant" else "user"
        blocks = _blocks(m)
        # Tool results travel as user turns, and consecutive same-role turns must be merged:
        # several tool messages (plus any user text after them) become one user message.
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return "\n\n".join(system), out


def _usage(raw: Any, output_tokens: int | None = None) -> Usage:
    if not isinstance(raw, dict):
        return Usage(output_tokens=output_tokens or 0)
    cache_read = int(raw.get("cache_read_input_tokens") or 0)
    cache_write = int(raw.get("cache_creation_input_tokens") or 0)
    # input_tokens here excludes cached tokens; the neutral Usage counts the whole prompt.
    return Usage(
        input_tokens=int(raw.get("input_tokens") or 0) + cache_read + cache_write,
        output_tokens=int(raw.get("output_tokens") or 0) if output_tokens is None else output_tokens,
        cached_input_tokens=cache_read,
    )


def _arguments(value: Any) -> str:
    # A string input is not valid API output, but keeping it verbatim lets a malformed call
    # reach the orchestrator unchanged instead of being re-encoded into valid JSON.
    if isinstance(value, str):
        return value
    return orjson.dumps(value if value is not None else {}).decode()


@dataclass(slots=True)
class _Block:
    type: str
    id: str = ""
    name: str = ""
    parts: list[str] = field(default_factory=list)
    initial_input: Any = None


class AnthropicMessagesProvider(HttpProvider):
    _path = "messages"
    _request_id_header = "request-id"

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        timeout_s: float = 60.0,
        stream: bool = False,
        client: HttpClient | None = None,
        name: str = "anthropic",
        anthropic_version: str = "2023-06-01",
    ) -> None:
        self._version = anthropic_version  # before the base class renders the fixed headers
        super().__init__(base_url, api_key, timeout_s=timeout_s, stream=stream, client=client, name=name)

    def _headers(self) -> dict[str, str]:
        headers = {"anthropic-version": self._version}
        if self._api_key:
            headers["x-api-key"] = self._api_key
        return headers

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        system, messages = _conversation(request.messages)
        body: dict[str, Any] = {"model": request.model, "max_tokens": request.max_tokens, "messages": messages}
        if system:
            body["system"] = system
        if request.tools:
            body["tools"] = [t.to_dict() for t in request.tools]
        return body

    def _result(
        self, text: str, calls: tuple[ToolCall, ...], usage: Usage, finish: str, model: str, rid: str | None
    ) -> ChatResult:
        return chat_result(text, calls, usage, finish, _FINISH, model, rid)

    def _parse(self, data: dict[str, Any], request: ChatRequest, request_id: str | None) -> ChatResult:
        text: list[str] = []
        calls: list[ToolCall] = []
        for block in data["content"]:
            if block.get("type") == "text":
                text.append(str(block.get("text", "")))
            elif block.get("type") == "tool_use":
                calls.append(ToolCall(str(block["id"]), str(block["name"]), _arguments(block.get("input"))))
        stop = str(data.get("stop_reason") or ("tool_use" if calls else "end_turn"))
        model = str(data.get("model") or request.model)
        return self._result(
            "".join(text), tuple(calls), _usage(data.get("usage")), stop, model, request_id or data.get("id")
        )

    async def _parse_stream(self, response: Response, request: ChatRequest, request_id: str | None) -> ChatResult:
        blocks: dict[int, _Block] = {}
        start_usage: Any = None
        output_tokens: int | None = None
        stop: str | None = None
        model = request.model
        body_id: str | None = None
        async for _event, data in iter_sse(response):
            ev = as_dict(orjson.loads(data), "stream event")
            kind = ev.get("type")
            if kind == "message_start":
                msg = as_dict(ev["message"], "message")
                body_id, model = msg.get("id"), str(msg.get("model") or model)
                start_usage = msg.get("usage")
            elif kind == "content_block_start":
                cb = as_dict(ev["content_block"], "content_block")
                block = _Block(str(cb.get("type")), str(cb.get("id", "")), str(cb.get("name", "")))
                block.initial_input = cb.get("input")
                if block.type == "text" and cb.get("text"):
                    block.parts.append(str(cb["text"]))
                blocks[int(ev["index"])] = block
            elif kind == "content_block_delta":
                delta = as_dict(ev["delta"], "delta")
                target = blocks[int(ev["index"])]
                if delta.get("type") == "text_delta":
                    target.parts.append(str(delta.get("text", "")))
                elif delta.get("type") == "input_json_delta":
                    target.parts.append(str(delta.get("partial_json", "")))
            elif kind == "message_delta":
                stop = as_dict(ev.get("delta") or {}, "delta").get("stop_reason") or stop
                usage = ev.get("usage")
                if isinstance(usage, dict):
                    output_tokens = int(usage.get("output_tokens") or 0)
                    if usage.get("input_tokens") is not None:
                        start_usage = {**(start_usage or {}), **usage}
            elif kind == "error":
                self._raise_stream_error(ev)
            elif kind == "message_stop":
                break
        if stop is None:
            raise ProviderError(
                f"{self.name}: stream ended before a stop_reason", retryable=True, error_type="stream_incomplete"
            )
        text = "".join("".join(b.parts) for _, b in sorted(blocks.items()) if b.type == "text")
        calls = tuple(
            ToolCall(b.id, b.name, "".join(b.parts) if b.parts else _arguments(b.initial_input))
            for _, b in sorted(blocks.items())
            if b.type == "tool_use"
        )
        usage = _usage(start_usage, output_tokens)
        return self._result(text, calls, usage, str(stop), model, request_id or body_id)

    def _raise_stream_error(self, event: dict[str, Any]) -> NoReturn:
        raw = event.get("error")
        err: dict[str, Any] = raw if isinstance(raw, dict) else {}
        err_type = str(err.get("type") or "api_error")
        raise ProviderError(
            f"{self.name}: stream error {err_type}: {str(err.get('message', ''))[:200]}",
            retryable=err_type in _RETRYABLE_STREAM_ERRORS,
            error_type="overloaded" if err_type == "overloaded_error" else "stream_error",
        )
