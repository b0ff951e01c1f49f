"""Anthropic Messages API wire format, as spoken by the scripted model server."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from agentstream.doubles.scripted_model.scenarios import ScriptedToolCall
from agentstream.doubles.scripted_model.wire import (
    BadRequest,
    Conversation,
    Reply,
    find_scenario,
    fragments,
    prefix_sums,
    sse_event,
    text_of_blocks,
    text_pieces,
    tool_chars,
)

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def _block_chars(block: Any) -> int:
    if isinstance(block, str):
        return len(block)
    if not isinstance(block, Mapping):
        raise BadRequest("content blocks must be objects")
    kind = block.get("type")
    if kind == "text":
        return len(str(block.get("text", "")))
    if kind == "tool_use":
        return len(str(block.get("name", ""))) + len(orjson.dumps(block.get("input", {})))
    if kind == "tool_result":
        inner = block.get("content", "")
        return len(inner) if isinstance(inner, str) else sum(_block_chars(b) for b in inner or [])
    return 0


def _user_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return text_of_blocks(content)


def _tool_input(call: ScriptedToolCall) -> Any:
    """The non-streaming `input` field. Real responses always carry an object; a scripted
    malformed call is sent as the raw string so a client can still surface it verbatim."""
    if call.raw_arguments is None:
        return call.arguments
    try:
        parsed = orjson.loads(call.raw_arguments)
    except orjson.JSONDecodeError:
        return call.raw_arguments
    return parsed if isinstance(parsed, dict) else call.raw_arguments


class AnthropicWire:
    name = "anthropic"
    request_id_header = "request-id"
    id_prefix = "msg_scripted_"

    def conversation(self, body: Mapping[str, Any]) -> Conversation:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages: field required (non-empty array)")
        if not isinstance(body.get("max_tokens"), int):
            raise BadRequest("max_tokens: field required")
        system = body.get("system", "")
        system_chars = len(system) if isinstance(system, str) else sum(_block_chars(b) for b in system)
        sizes: list[int] = []
        roles: list[str] = []
        user_texts: list[str] = []
        for m in messages:
            if not isinstance(m, Mapping) or m.get("role") not in ("user", "assistant"):
                raise BadRequest("messages: each message needs role 'user' or 'assistant'")
            content = m.get("content")
            if isinstance(content, str):
                size = len(content)
            elif isinstance(content, list):
                size = sum(_block_chars(b) for b in content)
            else:
                raise BadRequest("messages: content must be a string or an array of blocks")
            if m["role"] == "user":
                user_texts.append(_user_text(content))
            sizes.append(size)
            roles.append(str(m["role"]))
        total, cached, assistants = prefix_sums(sizes, roles)
        fixed = system_chars + tool_chars(body.get("tools"))
        return Conversation(
            scenario=find_scenario(user_texts),
            assistant_turns=assistants,
            prompt_chars=total + fixed,
            cached_chars=cached + fixed if cached else 0,
        )

    def wants_usage_chunk(self, body: Mapping[str, Any]) -> bool:
        return True

    def _tool_id(self, reply: Reply, i: int) -> str:
        return f"toolu_{reply.turn_index}_{i}"

    def _stop_reason(self, reply: Reply) -> str:
        return "tool_use" if reply.turn.tool_calls else "end_turn"

    def _usage(self, reply: Reply, output_tokens: int) -> dict[str, Any]:
        # Anthropic's input_tokens excludes cache reads; the two together are the whole prompt.
        return {
            "input_tokens": reply.input_tokens - reply.cached_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": reply.cached_tokens,
        }

    def _message(self, reply: Reply, content: list[dict[str, Any]], stop: str | None) -> dict[str, Any]:
        return {
            "id": reply.reply_id,
            "type": "message",
            "role": "assistant",
            "model": reply.model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
        }

    def reply_body(self, reply: Reply) -> dict[str, Any]:
        turn = reply.turn
        content: list[dict[str, Any]] = []
        if turn.text:
            content.append({"type": "text", "text": turn.text})
        for i, c in enumerate(turn.tool_calls):
            tool_id = self._tool_id(reply, i)
            content.append({"type": "tool_use", "id": tool_id, "name": c.name, "input": _tool_input(c)})
        msg = self._message(reply, content, self._stop_reason(reply))
        msg["usage"] = self._usage(reply, reply.output_tokens)
        return msg

    def reply_frames(self, reply: Reply, include_usage: bool) -> list[bytes]:
        turn = reply.turn
        start = self._message(reply, [], None)
        start["usage"] = self._usage(reply, 1)
        frames = [sse_event("message_start", {"type": "message_start", "message": start})]
        index = 0
        if turn.text:
            frames.append(self._block_start(index, {"type": "text", "text": ""}))
            frames.append(sse_event("ping", {"type": "ping"}))
            for piece in text_pieces(turn.text):
                frames.append(self._block_delta(index, {"type": "text_delta", "text": piece}))
            frames.append(self._block_stop(index))
            index += 1
        for i, call in enumerate(turn.tool_calls):
            block = {"type": "tool_use", "id": self._tool_id(reply, i), "name": call.name, "input": {}}
            frames.append(self._block_start(index, block))
            for frag in fragments(call.arguments_text(), 3):
                frames.append(self._block_delta(index, {"type": "input_json_delta", "partial_json": frag}))
            frames.append(self._block_stop(index))
            index += 1
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self._stop_reason(reply), "stop_sequence": None},
            "usage": {"output_tokens": reply.output_tokens},
        }
        frames.append(sse_event("message_delta", delta))
        frames.append(sse_event("message_stop", {"type": "message_stop"}))
        return frames

    @staticmethod
    def _block_start(index: int, block: dict[str, Any]) -> bytes:
        event = {"type": "content_block_start", "index": index, "content_block": block}
        return sse_event("content_block_start", event)

    @staticmethod
    def _block_delta(index: int, delta: dict[str, Any]) -> bytes:
        event = {"type": "content_block_delta", "index": index, "delta": delta}
        return sse_event("content_block_delta", event)

    @staticmethod
    def _block_stop(index: int) -> bytes:
        return sse_event("content_block_stop", {"type": "content_block_stop", "index": index})

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return {"type": "error", "error": {"type": kind, "message": message}}


ANTHROPIC = AnthropicWire()
