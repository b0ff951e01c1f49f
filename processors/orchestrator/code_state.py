"""A code-mode program in flight, as part of the run's state (see codemode.py for the rounds)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class CodeCall:
    """A tool call the program made, in the order it made them: requested as a call of its own."""

    tool: str
    arguments_json: str
    result: str | None = None
    is_error: bool = False
    requested: bool = False


@dataclass(frozen=True, slots=True)
class CodeRun:
    """The program of the model's run_code call `call_id`: the last round asked for (-1: none
    yet), whether its answer is still to come, the calls so far, and, once it ended, the one
    observation the model gets (`output`, an error if `failed`)."""

    call_id: str
    round: int = -1
    waiting: bool = False
    calls: tuple[CodeCall, ...] = ()
    output: str | None = None
    failed: bool = False

    @staticmethod
    def load(value: Any) -> CodeRun:
        if isinstance(value, CodeRun):
            return value
        d = dict(value)
        d["calls"] = tuple(CodeCall(**c) if isinstance(c, dict) else c for c in d.get("calls", ()))
        return CodeRun(**d)
