"""Adapter for the OpenAI Chat Completions API (and servers compatible with it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from agentstream.llm import ChatRequest, ChatResult, Message, ProviderError, ToolCall, Usage
from agentstream.processors.model_invoker.providers._http import HttpProvider, as_dict, chat_result, iter_sse
from agentstream.processors.model_invoker.providers.http1 import HttpClient, Response

# Tool results carry no error flag in this protocol, so the model is told in the text.
ERROR_PREFIX = "ERROR: "

_FINISH = {"function_call": "tool_calls"}


def _message(m: Message) -> dict[str, Any]:
    if m.role == "tool":
        content = ERROR_PREFIX + m.content if m.is_error else m.content
        return {"role": "tool", "tool_call_id": m.tool_call_id or "", "content": content}
    if m.role == "assistant" and m.tool_calls:
        return {
            "role": "assistant",
            "content": m.content or None,
            "tool_calls": [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json}}
                for c in m.tool_calls
            ],
        }
    return {"role": m.role, "content": m.content}


def _usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    details = raw.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return Usage(
        input_tokens=int(raw.get("prompt_tokens") or 0),
        output_tokens=int(raw.get("completion_tokens") or 0),
        cached_input_tokens=int(cached or 0),
    )


@dataclass(slots=True)
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class OpenAIChatProvider(HttpProvider):
    _path = "chat/completions"
    _request_id_header = "x-request-id"

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        timeout_s: float = 60.0,
        stream: bool = False,
        client: HttpClient | None = None,
        name: str = "openai",
    ) -> None:
        super().__init__(base_url, api_key, timeout_s=timeout_s, stream=stream, client=client, name=name)

    def _headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [_message(m) for m in request.messages],
            "max_tokens": request.max_tokens,
        }
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.input_schema},
                }
                for t in request.tools
            ]
        if self._stream:
            body["stream_options"] = {"include_usage": True}
        return body

    def _result(
        self, text: str, calls: tuple[ToolCall, ...], usage: Usage, finish: str, model: str, rid: str | None
    ) -> ChatResult:
        return chat_result(text, calls, usage, finish, _FINISH, model, rid)

    def _parse(self, data: dict[str, Any], request: ChatRequest, request_id: str | None) -> ChatResult:
        choice = as_dict(data["choices"][0], "choices[0]")
        msg = as_dict(choice["message"], "choices[0].message")
        calls = tuple(
            ToolCall(
                id=str(c["id"]),
                name=str(c["function"]["name"]),
                arguments_json=str(c["function"].get("arguments") or ""),
            )
            for c in msg.get("tool_calls") or ()
        )
        return self._result(
            text=str(msg.get("content") or ""),
            calls=calls,
            usage=_usage(data.get("usage")),
            finish=str(choice.get("finish_reason") or ("tool_calls" if calls else "stop")),
            model=str(data.get("model") or request.model),
            rid=request_id or data.get("id"),
        )

    async def _parse_stream(self, response: Response, request: ChatRequest, request_id: str | None) -> ChatResult:
        text: list[str] = []
        partial: dict[int, _PartialCall] = {}
        usage = Usage()
        finish: str | None = None
        model = request.model
        body_id: str | None = None
        done = False
        async for _event, data in iter_sse(response):
            if data == "[DONE]":
                done = True
                break
            chunk = as_dict(orjson.loads(data), "stream chunk")
            if "error" in chunk:
                # A failure after the 200 was sent: the server side broke mid-generation.
                detail = as_dict(chunk["error"], "error").get("message", "")
                raise ProviderError(
                    f"{self.name}: stream error: {str(detail)[:200]}", retryable=True, error_type="stream_error"
                )
            body_id = body_id or chunk.get("id")
            model = str(chunk.get("model") or model)
            if chunk.get("usage"):
                usage = _usage(chunk["usage"])
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    text.append(str(delta["content"]))
                for tc in delta.get("tool_calls") or ():
                    slot = partial.setdefault(int(tc.get("index", 0)), _PartialCall())
                    slot.id = slot.id or str(tc.get("id") or "")
                    fn = tc.get("function") or {}
                    # The name arrives whole in the first fragment; later fragments repeat nothing.
                    slot.name = slot.name or str(fn.get("name") or "")
                    if fn.get("arguments"):
                        slot.arguments.append(str(fn["arguments"]))
                if choice.get("finish_reason"):
                    finish = str(choice["finish_reason"])
        if finish is None:
            raise ProviderError(
                f"{self.name}: stream ended before a finish_reason (done={done})",
                retryable=True,
                error_type="stream_incomplete",
            )
        calls = tuple(
            ToolCall(id=p.id or f"call_{i}", name=p.name, arguments_json="".join(p.arguments))
            for i, p in sorted(partial.items())
        )
        return self._result("".join(text), calls, usage, finish, model, request_id or body_id)
