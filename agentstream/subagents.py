"""`spawn_agent`: the platform tool through which a run starts a child run ("agents as tools").

The tool is declared here (its JSON Schema, what the model sees) and implemented by the platform's
processors, never by the tool executor: the parent's orchestrator turns a planned call into the
child's `RunRequested` (processors/orchestrator/subagents.py), the cost governor reserves the
child's budget on the parent's ledger (processors/cost_governor/subagents.py), and the child's end
comes back to the parent as the call's `ToolCallCompleted`. Shared by those processors, so it
imports none of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from agentstream.llm import ToolSpec
from agentstream.tooling import ToolDescriptor

SPAWN_AGENT = "spawn_agent"
# The condensed result a parent reads of a child: its final answer (or why it did not finish), cut
# here. The parent's prompt grows by at most this much per child, whatever the child read.
RESULT_CHARS = 4000
_CUT = "\n[... the child's answer was cut at {n} characters]"


@dataclass(frozen=True, slots=True)
class SpawnArgs:
    """A spawn call's arguments as asked for; 0 means "not given" (the platform chooses)."""

    task: str
    tools: tuple[str, ...] = ()
    max_steps: int = 0
    budget_usd: float = 0.0
    budget_tokens: int = 0

    @staticmethod
    def parse(arguments_json: str) -> SpawnArgs:
        """The orchestrator validated the call against the schema before it got here; anything
        else reads as not given, never as an exception in a fold."""
        try:
            raw = orjson.loads(arguments_json)
        except orjson.JSONDecodeError:
            raw = {}
        if not isinstance(raw, dict):
            raw = {}
        tools = raw.get("tools")
        return SpawnArgs(
            task=str(raw.get("task", "")),
            tools=tuple(str(t) for t in tools) if isinstance(tools, list) else (),
            max_steps=_count(raw.get("max_steps")),
            budget_usd=_amount(raw.get("budget_usd")),
            budget_tokens=_count(raw.get("budget_tokens")),
        )

    def to_json(self) -> str:
        return orjson.dumps(
            {"task": self.task, "tools": list(self.tools), "max_steps": self.max_steps,
             "budget_usd": self.budget_usd, "budget_tokens": self.budget_tokens},
            option=orjson.OPT_SORT_KEYS,
        ).decode()  # fmt: skip


def _count(value: object) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else 0


def _amount(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else 0.0


def condense(text: str, limit: int = RESULT_CHARS) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + _CUT.format(n=limit)


def descriptor() -> ToolDescriptor:
    schema = {
        "type": "object",
        "properties": {
            # The API's own bound on a task: a child's is no larger than a client's may be.
            "task": {
                "type": "string",
                "minLength": 1,
                "maxLength": 100_000,
                "description": "everything the subagent needs to know",
            },
            "tools": {
                "type": "array",
                "items": {"type": "string", "maxLength": 200},
                "maxItems": 64,
                "description": "the tools it may use: a subset of yours (default: none)",
            },
            "max_steps": {"type": "integer", "minimum": 1, "description": "its step cap, taken from your steps"},
            "budget_usd": {"type": "number", "minimum": 0, "description": "its budget, taken from yours"},
            "budget_tokens": {"type": "integer", "minimum": 0, "description": "its token budget, taken from yours"},
        },
        "required": ["task"],
        "additionalProperties": False,
    }
    description = (
        "Start a subagent: a separate run that works on `task` with only what you put in it, and "
        "returns its final answer (or why it stopped) as this call's result. Several calls in one "
        "step run in parallel. Its steps and budget come out of yours."
    )
    # Read-only: starting a child does nothing by itself; each of the child's own calls is gated.
    return ToolDescriptor(ToolSpec(SPAWN_AGENT, description, schema), "builtin", "read_only", idempotent=True)
