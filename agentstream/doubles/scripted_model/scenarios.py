"""Scenario files for the scripted (fake) model server: a fixed list of assistant turns.

Scenarios are validated when loaded so that a typo in a JSON file fails at start-up with the
file and field named, rather than as a confusing reply in the middle of a test or benchmark.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class ScriptedToolCall:
    name: str
    arguments: dict[str, Any]
    # Sent verbatim instead of the JSON-encoded `arguments`, to script malformed calls.
    raw_arguments: str | None = None

    def arguments_text(self) -> str:
        if self.raw_arguments is not None:
            return self.raw_arguments
        return orjson.dumps(self.arguments).decode()


@dataclass(frozen=True, slots=True)
class FailSpec:
    status: int
    times: int
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Turn:
    text: str = ""
    tool_calls: tuple[ScriptedToolCall, ...] = ()
    fail_attempts: tuple[FailSpec, ...] = ()
    delay_ms: int = 0
    # Answer 200 with a truncated body, to exercise clients' handling of unparseable replies.
    corrupt_response: bool = False

    def failure_for_attempt(self, attempt: int) -> FailSpec | None:
        """The failure to inject on the `attempt`-th (1-based) request of one logical call."""
        seen = 0
        for spec in self.fail_attempts:
            seen += spec.times
            if attempt <= seen:
                return spec
        return None


EXHAUSTED_TURN = Turn(text="scenario exhausted")


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    turns: tuple[Turn, ...]
    repeat_last: bool = False
    # Compromised-model mode: obey an `INSTRUCTION: {"tool": ..., "arguments": {...}}` line found in
    # the tool result that ends the conversation, instead of playing the scripted turn.
    obey_tool_output: bool = False
    # Context-faithful mode (faithful.py): no scripted turns; every answer follows from the prompt.
    faithful: bool = False

    def turn(self, index: int) -> Turn:
        if index < len(self.turns):
            return self.turns[index]
        if self.repeat_last and self.turns:
            return self.turns[-1]
        return EXHAUSTED_TURN


def _require(cond: bool, where: str, what: str) -> None:
    if not cond:
        raise ValueError(f"scenario {where}: {what}")


def _parse_tool_call(d: Any, where: str) -> ScriptedToolCall:
    _require(isinstance(d, Mapping), where, "tool call must be an object")
    name = d.get("name")
    _require(isinstance(name, str) and bool(name), where, "tool call needs a non-empty 'name'")
    args = d.get("arguments", {})
    _require(isinstance(args, Mapping), where, "'arguments' must be an object")
    raw = d.get("raw_arguments")
    _require(raw is None or isinstance(raw, str), where, "'raw_arguments' must be a string")
    return ScriptedToolCall(name=str(name), arguments=dict(args), raw_arguments=raw)


def _parse_fail(d: Any, where: str) -> FailSpec:
    _require(isinstance(d, Mapping), where, "fail_attempts entries must be objects")
    status = d.get("status")
    _require(isinstance(status, int) and 400 <= status <= 599, where, "'status' must be a 4xx/5xx int")
    times = d.get("times", 1)
    _require(isinstance(times, int) and times >= 0, where, "'times' must be a non-negative int")
    retry_after = d.get("retry_after")
    _require(
        retry_after is None or (isinstance(retry_after, int | float) and retry_after >= 0),
        where,
        "'retry_after' must be a non-negative number",
    )
    return FailSpec(
        status=int(status), times=int(times), retry_after=None if retry_after is None else float(retry_after)
    )


def _parse_turn(d: Any, where: str) -> Turn:
    _require(isinstance(d, Mapping), where, "turn must be an object")
    text = d.get("text", "")
    _require(isinstance(text, str), where, "'text' must be a string")
    calls = d.get("tool_calls", [])
    fails = d.get("fail_attempts", [])
    _require(isinstance(calls, list) and isinstance(fails, list), where, "lists expected")
    delay = d.get("delay_ms", 0)
    _require(isinstance(delay, int | float) and delay >= 0, where, "'delay_ms' must be >= 0")
    return Turn(
        text=text,
        tool_calls=tuple(_parse_tool_call(c, where) for c in calls),
        fail_attempts=tuple(_parse_fail(f, where) for f in fails),
        delay_ms=int(delay),
        corrupt_response=bool(d.get("corrupt_response", False)),
    )


def parse_scenario(d: Any, source: str = "<dict>") -> Scenario:
    _require(isinstance(d, Mapping), source, "top level must be an object")
    name = d.get("name")
    _require(isinstance(name, str) and bool(name), source, "needs a non-empty 'name'")
    turns = d.get("turns")
    _require(isinstance(turns, list), source, "'turns' must be a list")
    where = f"{name!r} ({source})"
    return Scenario(
        name=str(name),
        turns=tuple(_parse_turn(t, f"{where} turn {i}") for i, t in enumerate(turns)),
        repeat_last=bool(d.get("repeat_last", False)),
        obey_tool_output=bool(d.get("obey_tool_output", False)),
        faithful=bool(d.get("faithful", False)),
    )


def load_scenario_dir(directory: str | Path) -> list[Scenario]:
    path = Path(directory)
    if not path.is_dir():
        raise ValueError(f"scenario directory not found: {path}")
    return [parse_scenario(orjson.loads(p.read_bytes()), str(p)) for p in sorted(path.glob("*.json"))]


def load_bundled_scenarios() -> list[Scenario]:
    root = importlib.resources.files("agentstream.doubles.scripted_model") / "scenarios"
    out: list[Scenario] = []
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            out.append(parse_scenario(orjson.loads(entry.read_bytes()), f"bundled:{entry.name}"))
    return out


def load_scenarios(scenario_dirs: Iterable[str | Path] = (), *, bundled: bool = True) -> dict[str, Scenario]:
    """Bundled scenarios first, then each directory in order; a later file overrides by name."""
    found: list[Scenario] = load_bundled_scenarios() if bundled else []
    for directory in scenario_dirs:
        found.extend(load_scenario_dir(directory))
    return {s.name: s for s in found}
