"""Provider-neutral chat types: what the orchestrator asks for and what a model adapter returns.

The journal stores these as JSON so that OpenAI-compatible and Anthropic adapters can both
reconstruct their own wire format from one recorded conversation.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import orjson

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    input_schema: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "input_schema": self.input_schema}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> ToolSpec:
        return ToolSpec(str(d["name"]), str(d.get("description", "")), dict(d.get("input_schema") or {}))


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool call as the model emitted it. `arguments_json` is kept raw: it may be invalid JSON,
    and the orchestrator, not the adapter, decides what an invalid call becomes."""

    id: str
    name: str
    arguments_json: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "arguments_json": self.arguments_json}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> ToolCall:
        return ToolCall(str(d["id"]), str(d["name"]), str(d["arguments_json"]))


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    is_error: bool = False
    # A tool result offloaded to the blob store: its handle. `content` then holds a preview and a
    # marker; the model invoker's adapter puts the full text back right before the provider call.
    blob: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            d["tool_calls"] = [c.to_dict() for c in self.tool_calls]
        if self.tool_call_id is not None:
            d["tool_call_id"] = self.tool_call_id
        if self.is_error:
            d["is_error"] = True
        if self.blob is not None:  # absent otherwise: a journal without offloads keeps its bytes
            d["blob"] = self.blob
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Message:
        return Message(
            role=d["role"],
            content=str(d.get("content", "")),
            tool_calls=tuple(ToolCall.from_dict(c) for c in d.get("tool_calls", ())),
            tool_call_id=d.get("tool_call_id"),
            is_error=bool(d.get("is_error", False)),
            blob=d.get("blob"),
        )


def messages_to_json(messages: tuple[Message, ...] | list[Message]) -> str:
    return orjson.dumps([m.to_dict() for m in messages]).decode()


def messages_from_json(raw: str) -> tuple[Message, ...]:
    return tuple(Message.from_dict(d) for d in orjson.loads(raw))


class ConversationMemo:
    """`messages_from_json` for a stream of requests that each repeat a run's whole conversation:
    the messages parsed from a run's previous request are reused and only the new tail is parsed,
    so a step costs what it added, not the conversation's length. Bounded in runs and characters
    (least recently used out); the result always equals a full parse."""

    def __init__(self, max_runs: int = 2048, max_chars: int = 32 * 1024 * 1024) -> None:
        self._max_runs = max_runs
        self._max_chars = max_chars
        self._chars = 0
        self._last: OrderedDict[str, tuple[str, tuple[Message, ...]]] = OrderedDict()

    def parse(self, run_id: str, raw: str) -> tuple[Message, ...]:
        previous = self._last.pop(run_id, None)
        messages: tuple[Message, ...] | None = None
        if previous is not None:
            self._chars -= len(previous[0])
            head, known = previous  # head: the previous text without its closing bracket
            n = len(head)
            if known and len(raw) > n and raw[n] == "," and raw.startswith(head):
                messages = known + messages_from_json("[" + raw[n + 1 :])
            elif raw == head + "]":
                messages = known
        if messages is None:
            messages = messages_from_json(raw)
        if len(raw) <= self._max_chars // 4:
            self._last[run_id] = (raw[:-1], messages)
            self._chars += len(raw) - 1
            while self._last and (len(self._last) > self._max_runs or self._chars > self._max_chars):
                _, (dropped, _) = self._last.popitem(last=False)
                self._chars -= len(dropped)
        return messages


def tools_to_json(tools: tuple[ToolSpec, ...] | list[ToolSpec]) -> str:
    return orjson.dumps([t.to_dict() for t in tools]).decode()


def tools_from_json(raw: str) -> tuple[ToolSpec, ...]:
    return tuple(ToolSpec.from_dict(d) for d in orjson.loads(raw))


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...]
    max_tokens: int
    # Sent to the provider as the `Idempotency-Key` header: it identifies this logical call across
    # retries and lets the scripted model server count re-sent calls.
    call_id: str


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ChatResult:
    text: str
    tool_calls: tuple[ToolCall, ...]
    usage: Usage
    finish_reason: str
    model: str
    provider_request_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class ProviderError(Exception):
    """A model provider refused or failed a call. `retryable` carries the retry semantics:
    429, 5xx, timeouts and connection errors are retryable; other 4xx are terminal."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after_s: float | None = None,
        error_type: str = "provider_error",
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after_s = retry_after_s
        self.error_type = error_type


class ModelProvider(Protocol):
    """The only boundary through which agentstream talks to a model."""

    name: str

    async def complete(self, request: ChatRequest) -> ChatResult: ...

    async def aclose(self) -> None: ...
