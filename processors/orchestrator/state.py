"""A run as the orchestrator sees it: a frozen value folded from the run's journal events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from agentstream.llm import Message, ToolCall

Status = Literal["requested", "running", "halted", "completed", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled"})


@dataclass(frozen=True, slots=True)
class PlannedCall:
    """One tool call of the current step. `result` is set when its observation is known: from the
    executor, or at once for an invalid call, whose error observation never reaches a tool."""

    call_id: str
    tool_call_id: str
    tool: str
    arguments_json: str
    requested: bool = False
    result: str | None = None
    is_error: bool = False

    @property
    def needs_request(self) -> bool:
        return not self.requested and self.result is None


@dataclass(frozen=True, slots=True)
class RunState:
    run_id: str
    tenant_id: str
    status: Status
    task: str
    model: str
    tool_names: tuple[str, ...]
    max_steps: int
    tools_json: str = "[]"
    tool_versions: dict[str, str] = field(default_factory=dict)
    step: int = 0
    messages: tuple[Message, ...] = ()
    llm_pending: str | None = None
    planned: tuple[PlannedCall, ...] = ()
    invalid_streak: int = 0
    halts: int = 0  # how many times the run has halted at a limit; names the next halt and resume
    final_answer: str | None = None
    llm_failure: str | None = None
    cancel_reason: str | None = None
    outcome_reason: str = ""
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @staticmethod
    def load(value: Any) -> RunState:
        if isinstance(value, RunState):
            return value
        d = dict(value)
        d["tool_names"] = tuple(d["tool_names"])
        d["messages"] = tuple(Message.from_dict(m) if isinstance(m, dict) else m for m in d["messages"])
        d["planned"] = tuple(PlannedCall(**p) if isinstance(p, dict) else p for p in d["planned"])
        return RunState(**d)


def assistant_message(text: str, calls: tuple[ToolCall, ...]) -> Message:
    return Message(role="assistant", content=text, tool_calls=calls)
