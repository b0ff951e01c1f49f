"""Loop detection: the same tool call, or the same model output, repeating within a window of
recent steps. Pure: signatures are hashes of what the model produced, so replay finds the same loops."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass

import orjson

from agentstream.llm import ToolCall

WINDOW = 16  # the last this-many signatures (model outputs and tool calls, about 8 steps) are compared
THRESHOLD = 3  # this many identical ones within the window is a loop


@dataclass(frozen=True, slots=True)
class Loop:
    kind: str  # "tool_call" or "model_output"
    signature: str
    count: int
    evidence: str  # what repeated, shortened, for the journal


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _canonical_arguments(raw: str) -> str:
    try:
        return orjson.dumps(orjson.loads(raw), option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONDecodeError:
        return raw


def signatures(text: str, calls: tuple[ToolCall, ...]) -> list[tuple[str, str, str]]:
    """(kind, signature, evidence) for one model output: the output itself (ids left out, since a
    provider numbers every call afresh) and each tool call it asks for."""
    shown = [f"{c.name}({_canonical_arguments(c.arguments_json)})" for c in calls]
    out = [("model_output", "m:" + _digest(text + "\n" + "\n".join(shown)), (text + " " + "; ".join(shown))[:300])]
    out.extend(("tool_call", "t:" + _digest(s), s[:300]) for s in shown)
    return out


def observe(recent: tuple[str, ...], text: str, calls: tuple[ToolCall, ...]) -> tuple[tuple[str, ...], list[Loop]]:
    """The window after this output, and the loops it completes, if any."""
    found = signatures(text, calls)
    window = (*recent, *(sig for _, sig, _ in found))[-WINDOW:]
    counts = Counter(window)
    return window, [Loop(kind, sig, counts[sig], evidence) for kind, sig, evidence in found if counts[sig] >= THRESHOLD]
