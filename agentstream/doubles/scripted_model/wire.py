"""What both wire protocols of the scripted model server share: the reply plan and SSE framing."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from agentstream.doubles.scripted_model.scenarios import Turn

SCENARIO_MARKER = re.compile(r"\[scenario:([A-Za-z0-9_.\-]+)\]")


class BadRequest(ValueError):
    """The request body does not look like the protocol; answered with a provider-shaped 400."""


@dataclass(frozen=True, slots=True)
class Conversation:
    """What the server needs from a request, whichever protocol it came in."""

    scenario: str | None
    assistant_turns: int
    prompt_chars: int
    # Characters of the prefix a real provider would have cached from the previous turn.
    cached_chars: int


@dataclass(frozen=True, slots=True)
class Reply:
    model: str
    turn_index: int
    turn: Turn
    reply_id: str
    created: int
    input_tokens: int  # all prompt tokens, cached ones included
    cached_tokens: int
    output_tokens: int


class WireProtocol(Protocol):
    name: str
    request_id_header: str
    id_prefix: str

    def conversation(self, body: Mapping[str, Any]) -> Conversation: ...

    def wants_usage_chunk(self, body: Mapping[str, Any]) -> bool: ...

    def reply_body(self, reply: Reply) -> dict[str, Any]: ...

    def reply_frames(self, reply: Reply, include_usage: bool) -> list[bytes]: ...

    def error_body(self, status: int, message: str) -> dict[str, Any]: ...


def approx_tokens(chars: int, *, minimum: int = 1) -> int:
    return max(minimum, chars // 4)


def tool_chars(tools: Any) -> int:
    """Counts tools the same way for both protocols, so the same conversation costs the same."""
    if not isinstance(tools, list):
        return 0
    total = 0
    for t in tools:
        if not isinstance(t, Mapping):
            continue
        inner = t.get("function")
        fn: Mapping[str, Any] = inner if isinstance(inner, Mapping) else t
        schema = fn.get("parameters", fn.get("input_schema", {}))
        total += len(str(fn.get("name", ""))) + len(str(fn.get("description", "")))
        total += len(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))
    return total


def output_chars(turn: Turn) -> int:
    return len(turn.text) + sum(len(c.name) + len(c.arguments_text()) for c in turn.tool_calls)


def text_of_blocks(blocks: Iterable[Any]) -> str:
    """Concatenated text of the `{"type": "text", "text": ...}` parts of a content list."""
    texts = [b.get("text", "") for b in blocks if isinstance(b, Mapping) and b.get("type") == "text"]
    return "".join(str(t) for t in texts)


def find_scenario(user_texts: Iterable[str]) -> str | None:
    for text in user_texts:
        m = SCENARIO_MARKER.search(text)
        if m:
            return m.group(1)
    return None


def prefix_sums(sizes: list[int], roles: list[str]) -> tuple[int, int, int]:
    """(total chars, chars up to and including the last assistant message, assistant count)."""
    total = sum(sizes)
    cached = 0
    running = 0
    assistants = 0
    for size, role in zip(sizes, roles, strict=True):
        running += size
        if role == "assistant":
            assistants += 1
            cached = running
    return total, cached, assistants


def fragments(s: str, parts: int) -> list[str]:
    """Splits `s` into up to `parts` non-empty pieces, so clients must reassemble across chunks."""
    if not s:
        return []
    parts = max(1, min(parts, len(s)))
    step, extra = divmod(len(s), parts)
    out: list[str] = []
    pos = 0
    for i in range(parts):
        size = step + (1 if i < extra else 0)
        out.append(s[pos : pos + size])
        pos += size
    return out


def text_pieces(text: str) -> list[str]:
    # About one piece per 24 characters: enough chunks to exercise reassembly, few enough to be fast.
    return fragments(text, max(1, -(-len(text) // 24)))


def sse_data(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def sse_event(event: str, obj: Any) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


def chat_content_text(content: Any) -> str:
    """An OpenAI chat message's content as text: a string, a list of content parts, or null."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return text_of_blocks(content)
    raise BadRequest("message content must be a string, a list of parts or null")
