"""Loop detection: the same tool call, or the same model output, repeating within a window of
recent steps. Pure: signatures are hashes of what the model produced, so replay finds the same loops.

Only what actually ran fills the window. A call the policy gate refused, or that a person denied
(or nobody approved in time), never ran: if it counted, text injected into a tool result could make
the model repeat a denied call three times and so halt the user's run. Repeated denials are tracked
in a window of their own, and the tenant's policy says what they do (`on_repeated_denial`).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass

import orjson

from agentstream.llm import ToolCall

WINDOW = 16  # the last this-many signatures (model outputs and tool calls, about 8 steps) are compared
THRESHOLD = 3  # this many identical ones within the window is a loop
# What repeated denials of one call do: "warn" journals a LoopDetected once, "flag" journals a
# RunFlagged once (the run resource shows it, for review), "halt" halts the run (resumable).
DENIAL_ACTIONS = ("warn", "flag", "halt")
DEFAULT_ON_REPEATED_DENIAL = "flag"


def denial_action(value: str) -> str:
    """An action this version does not know (or none) is read as the default, which never stops the run."""
    return value if value in DENIAL_ACTIONS else DEFAULT_ON_REPEATED_DENIAL


@dataclass(frozen=True, slots=True)
class Loop:
    kind: str  # "tool_call", "model_output" or "denied_call"
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
    provider numbers every call afresh) and each tool call it asks for, in the model's order."""
    shown = [f"{c.name}({_canonical_arguments(c.arguments_json)})" for c in calls]
    out = [("model_output", "m:" + _digest(text + "\n" + "\n".join(shown)), (text + " " + "; ".join(shown))[:300])]
    out.extend(("tool_call", "t:" + _digest(s), s[:300]) for s in shown)
    return out


def observe(recent: tuple[str, ...], text: str, calls: tuple[ToolCall, ...]) -> tuple[tuple[str, ...], list[Loop]]:
    """The window as it would be if this output's calls run, and the loops that completes, if any.
    Checked before the calls run, so a third identical call is stopped, not run and then noticed."""
    found = signatures(text, calls)
    window = (*recent, *(sig for _, sig, _ in found))[-WINDOW:]
    counts = Counter(window)
    return window, [Loop(kind, sig, counts[sig], evidence) for kind, sig, evidence in found if counts[sig] >= THRESHOLD]


def commit(recent: tuple[str, ...], ran: list[str]) -> tuple[str, ...]:
    """The window once a step's calls are settled: `ran` holds the signatures of what ran."""
    return (*recent, *ran)[-WINDOW:]


def denied(recent: tuple[str, ...], signature: str, evidence: str) -> tuple[tuple[str, ...], Loop | None]:
    """The denial window after one more denied call, and the repeated denial it completes, if any."""
    window = (*recent, signature)[-WINDOW:]
    count = Counter(window)[signature]
    return window, Loop("denied_call", signature, count, evidence) if count >= THRESHOLD else None
