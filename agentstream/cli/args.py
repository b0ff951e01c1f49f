"""Argument types for numbers the run API bounds: the CLI refuses at parsing what the API would
refuse with a 422 (a negative budget, zero steps), naming the flag, instead of starting a run that
halts at once. The bounds are read from the API's own request models, so the two cannot drift.
Also the one parser of a `--since` time."""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel

from agentstream.context.settings import ContextSettingsError, parse_settings
from agentstream.contract.requests import Budget, CreateRun, ResumeRun
from agentstream.evaluation.policy import EvalPolicyError, parse_policy


def _bounds(model: type[BaseModel], field: str) -> tuple[float | None, float | None]:
    low = high = None
    for rule in model.model_fields[field].metadata:
        low = getattr(rule, "ge", low)
        high = getattr(rule, "le", high)
    return low, high


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _bounded(model: type[BaseModel], field: str, kind: type[int] | type[float], note: str) -> Callable[[str], float]:
    low, high = _bounds(model, field)
    span = f"between {_num(low)} and {_num(high)}" if low is not None and high is not None else "a number"

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {span}{note}, not {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its own messages
    return parse


NO_CAP = " (0: no cap)"
budget_usd = _bounded(Budget, "usd", float, NO_CAP)
budget_tokens = _bounded(Budget, "tokens", int, NO_CAP)
budget_wall_s = _bounded(Budget, "wall_s", float, NO_CAP)
max_steps = _bounded(CreateRun, "max_steps", int, "")
add_steps = _bounded(ResumeRun, "add_steps", int, "")
add_usd = _bounded(ResumeRun, "add_usd", float, "")
add_tokens = _bounded(ResumeRun, "add_tokens", int, "")
add_wall_s = _bounded(ResumeRun, "add_wall_s", float, "")


def context_settings(text: str) -> dict[str, Any]:
    """`--context JSON`: the fields given, checked as the orchestrator will read them."""
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc}): {text[:100]!r}") from None
    if not isinstance(raw, dict):
        raise argparse.ArgumentTypeError('must be a JSON object, e.g. \'{"mode": "on", "trigger_tokens": 32000}\'')
    try:
        parse_settings(raw)
    except ContextSettingsError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return raw


def eval_policy(text: str) -> dict[str, Any]:
    """`--eval JSON`: a tenant's step-check policy, checked as the orchestrator will read it."""
    try:
        raw = orjson.loads(text)
        parse_policy(raw)
    except orjson.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc}): {text[:100]!r}") from None
    except EvalPolicyError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return dict(raw)


_AGO_UNITS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def since_ms(text: str, now_ms: int | None = None) -> int:
    """A point in time for `--since`: ISO 8601 (`2026-12-06T10:00:00Z`; no zone means UTC), epoch
    milliseconds, or a span ago (`90s`, `30m`, `2h`, `7d`)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = text.strip()
    if value.isdigit():
        return int(value)
    unit = _AGO_UNITS.get(value[-1:])
    if unit is not None and value[:-1].isdigit():
        return now_ms - int(value[:-1]) * unit
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: give ISO 8601 (2026-12-06T10:00:00Z), epoch ms, or a span ago (30m, 2h, 7d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)
