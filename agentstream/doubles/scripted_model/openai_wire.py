"""OpenAI Chat Completions wire format, as spoken by the scripted model server."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentstream.doubles.scripted_model.wire import (
    BadRequest,
    Conversation,
    Reply,
    chat_content_text,
    find_scenario,
    fragments,
    prefix_sums,
    sse_data,
    text_pieces,
    tool_chars,
)

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    429: "rate_limit_error",
}


class OpenAIWire:
    name = "openai"
    request_id_header = "x-request-id"
    id_prefix = "chatcmpl-scripted-"

    def conversation(self, body: Mapping[str, Any]) -> Conversation:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("'messages' must be a non-empty array")
        sizes: list[int] = []
        roles: list[str] = []
        user_texts: list[str] = []
        for m in messages:
            if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
                raise BadRequest("each message needs a 'role'")
            text = chat_content_text(m.get("content"))
            size = len(text)
            calls = m.get("tool_calls") or []
            if not isinstance(calls, list):
                raise BadRequest("'tool_calls' must be an array")
            for c in calls:
                fn = c.get("function") if isinstance(c, Mapping) else None
                if not isinstance(fn, Mapping):
                    raise BadRequest("tool_calls entries need a 'function'")
                size += len(str(fn.get("name", ""))) + len(str(fn.get("arguments", "")))
            if m["role"] == "user":
                user_texts.append(text)
            sizes.append(size)
            roles.append(m["role"])
        total, cached, assistants = prefix_sums(sizes, roles)
        tools = tool_chars(body.get("tools"))
        return Conversation(
            scenario=find_scenario(user_texts),
            assistant_turns=assistants,
            prompt_chars=total + tools,
            cached_chars=cached + tools if cached else 0,
        )

    def wants_usage_chunk(self, body: Mapping[str, Any]) -> bool:
        opts = body.get("stream_options")
        return isinstance(opts, Mapping) and bool(opts.get("include_usage"))

    def _usage(self, reply: Reply) -> dict[str, Any]:
        return {
            "prompt_tokens": reply.input_tokens,
            "completion_tokens": reply.output_tokens,
            "total_tokens": reply.input_tokens + reply.output_tokens,
            "prompt_tokens_details": {"cached_tokens": reply.cached_tokens},
        }

    def _call_id(self, reply: Reply, i: int) -> str:
        return f"call_{reply.turn_index}_{i}"

    def reply_body(self, reply: Reply) -> dict[str, Any]:
        turn = reply.turn
        message: dict[str, Any] = {"role": "assistant", "content": turn.text or None}
        if turn.tool_calls:
            message["tool_calls"] = [
                {
                    "id": self._call_id(reply, i),
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments_text()},
                }
                for i, c in enumerate(turn.tool_calls)
            ]
        return {
            "id": reply.reply_id,
            "object": "chat.completion",
            "created": reply.created,
            "model": reply.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if turn.tool_calls else "stop",
                }
            ],
            "usage": self._usage(reply),
        }

    def reply_frames(self, reply: Reply, include_usage: bool) -> list[bytes]:
        base: dict[str, Any] = {
            "id": reply.reply_id,
            "object": "chat.completion.chunk",
            "created": reply.created,
            "model": reply.model,
        }
        if include_usage:
            # Real servers send "usage": null on every chunk but the last when usage is requested.
            base["usage"] = None

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return sse_data({**base, "choices": [choice]})

        turn = reply.turn
        frames = [chunk({"role": "assistant", "content": ""})]
        frames += [chunk({"content": piece}) for piece in text_pieces(turn.text)]
        for i, call in enumerate(turn.tool_calls):
            head = {"index": i, "id": self._call_id(reply, i), "type": "function"}
            frames.append(chunk({"tool_calls": [{**head, "function": {"name": call.name, "arguments": ""}}]}))
            for frag in fragments(call.arguments_text(), 3):
                frames.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": frag}}]}))
        frames.append(chunk({}, "tool_calls" if turn.tool_calls else "stop"))
        if include_usage:
            frames.append(sse_data({**base, "choices": [], "usage": self._usage(reply)}))
        frames.append(b"data: [DONE]\n\n")
        return frames

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        return {"error": {"message": message, "type": kind, "param": None, "code": None}}


OPENAI = OpenAIWire()
