"""OpenAI Chat Completions requests and replies, as the replica emulator reads and writes them.

Token counts use the project's one approximation (characters / 4, `approx_tokens`), so the
scripted model, the emulator and the benches agree on what a prompt costs.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from agentstream.doubles.scripted_model.wire import (
    BadRequest,
    approx_tokens,
    chat_content_text,
    sse_data,
    tool_chars,
)

DEFAULT_MAX_TOKENS = 256

# Three-letter words plus a separator: every word is exactly four characters, so a reply of N tokens is
# 4N characters and re-sending it in the next turn's prompt counts as N tokens again.
_WORDS = ("the", "and", "for", "are", "but", "not", "you", "all", "any", "can", "her", "was", "one", "our")


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str | None
    session: str
    prompt_tokens: int
    output_tokens: int
    stream: bool
    include_usage: bool


def _message_chars(message: Any) -> int:
    if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
        raise BadRequest("each message must be an object with a string 'role'")
    size = len(chat_content_text(message.get("content")))
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise BadRequest("'tool_calls' must be an array")
    for call in calls:
        fn = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(fn, Mapping):
            raise BadRequest("tool_calls entries need a 'function' object")
        size += len(str(fn.get("name", ""))) + len(str(fn.get("arguments", "")))
    return size


def _positive_int(body: Mapping[str, Any], *names: str) -> int | None:
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        # bool is an int in Python but never a token count on the wire.
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadRequest(f"'{name}' must be a positive integer")
        return value
    return None


def session_key(messages: list[Any]) -> str:
    """The conversation a request belongs to when the client names none: its first two messages
    (system prompt and first user message) are the same on every turn of one agent run."""
    head = orjson.dumps(messages[:2], option=orjson.OPT_SORT_KEYS)
    return "h-" + hashlib.sha256(head).hexdigest()[:32]


def parse_chat_request(raw: bytes) -> ChatRequest:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise BadRequest("'model' must be a string")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array")
    chars = sum(_message_chars(m) for m in messages) + tool_chars(body.get("tools"))
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise BadRequest("'user' must be a string")
    output = _positive_int(body, "max_completion_tokens", "max_tokens") or DEFAULT_MAX_TOKENS
    opts = body.get("stream_options")
    return ChatRequest(
        model=model or None,
        session=user if user else session_key(messages),
        prompt_tokens=approx_tokens(chars),
        output_tokens=output,
        stream=body.get("stream") is True,
        include_usage=isinstance(opts, Mapping) and opts.get("include_usage") is True,
    )


def reply_text(output_tokens: int) -> str:
    words = itertools.islice(itertools.cycle(_WORDS), output_tokens)
    # n words joined by n-1 spaces plus a final period: exactly 4n characters.
    return " ".join(words) + "."


def usage(prompt_tokens: int, cached_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": prompt_tokens + output_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def completion_body(reply_id: str, created: int, model: str, text: str, usage_obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": reply_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                # "length": like vLLM with ignore_eos, generation stops only at max_tokens.
                "finish_reason": "length",
            }
        ],
        "usage": usage_obj,
    }


class ChunkWriter:
    """SSE frames of one streamed completion."""

    def __init__(self, reply_id: str, created: int, model: str, include_usage: bool) -> None:
        self._base: dict[str, Any] = {
            "id": reply_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
        }
        if include_usage:
            # Real servers send "usage": null on every chunk but the last when usage is requested.
            self._base["usage"] = None

    def delta(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return sse_data({**self._base, "choices": [choice]})

    def usage(self, usage_obj: dict[str, Any]) -> bytes:
        return sse_data({**self._base, "choices": [], "usage": usage_obj})


def text_chunks(text: str, first: int) -> tuple[str, list[str]]:
    """The first streamed piece (the first token's characters) and the rest in ~64-character pieces."""
    head, rest = text[:first], text[first:]
    return head, [rest[i : i + 64] for i in range(0, len(rest), 64)]


def error_body(message: str, kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}
