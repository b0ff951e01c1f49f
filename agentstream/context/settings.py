"""A run's context settings: when its prompt is compacted and what compaction may touch.

Given per run (`context` on create) over the tenant's defaults, checked at the gateway with a 422
naming the field, and checked again here: the orchestrator pins the effective settings in the
run's `RunStarted`, so a later change of defaults never alters a running run's prompts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import orjson

from agentstream.routing.tiers import TIERS

Mode = Literal["off", "on"]
MIN_TRIGGER_TOKENS = 1_000
MAX_TRIGGER_TOKENS = 2_000_000
MAX_KEEP_TURNS = 50
MAX_EXCLUDED_TOOLS = 64
_FIELDS = ("mode", "trigger_tokens", "keep_turns", "summarize", "summary_tier", "exclude_tools")


class ContextSettingsError(ValueError):
    """Settings that cannot be applied; the message names the field and the allowed values."""


@dataclass(frozen=True, slots=True)
class ContextSettings:
    mode: Mode = "off"
    # Compaction starts when the prompt (as the provider sees it) is estimated above this; it
    # clears and summarizes in one large chunk, so the prompt then grows append-only for a while
    # and a replica's prefix cache keeps serving it.
    trigger_tokens: int = 64_000
    keep_turns: int = 1  # the latest assistant turns, with their tool results, kept as they are
    summarize: bool = True  # false: clearing only, never a summarization model call
    summary_tier: str = "small"
    exclude_tools: tuple[str, ...] = ()  # results of these tools are never cleared

    @property
    def on(self) -> bool:
        return self.mode == "on"

    def to_json(self) -> str:
        d = asdict(self)
        d["exclude_tools"] = list(self.exclude_tools)
        return orjson.dumps(d).decode()


OFF = ContextSettings()


def parse_settings(raw: str | dict[str, Any] | None, base: ContextSettings = OFF) -> ContextSettings:
    """`raw` (JSON text or a mapping; empty: `base`) over `base`, every field checked."""
    if raw is None or raw == "" or raw == {}:
        return base
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ContextSettingsError(f"context settings are not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ContextSettingsError("context settings must be an object")
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise ContextSettingsError(
            f"unknown context setting(s): {', '.join(map(str, unknown))[:200]}; known: {', '.join(_FIELDS)}"
        )
    return replace(base, **{name: _checked(name, value) for name, value in raw.items()})


def _checked(name: str, value: Any) -> Any:
    if name == "mode":
        if value not in ("off", "on"):
            raise ContextSettingsError("context.mode must be 'off' or 'on'")
        return value
    if name == "summarize":
        if not isinstance(value, bool):
            raise ContextSettingsError("context.summarize must be true or false")
        return value
    if name == "summary_tier":
        if value not in TIERS:
            raise ContextSettingsError(f"context.summary_tier must be one of {', '.join(TIERS)}")
        return value
    if name == "exclude_tools":
        if not isinstance(value, list) or len(value) > MAX_EXCLUDED_TOOLS:
            raise ContextSettingsError(
                f"context.exclude_tools must be a list of at most {MAX_EXCLUDED_TOOLS} tool names"
            )
        if not all(isinstance(v, str) and 0 < len(v) <= 128 for v in value):
            raise ContextSettingsError("context.exclude_tools must hold tool names (1 to 128 characters)")
        return tuple(sorted(set(value)))
    low, high = (MIN_TRIGGER_TOKENS, MAX_TRIGGER_TOKENS) if name == "trigger_tokens" else (0, MAX_KEEP_TURNS)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ContextSettingsError(f"context.{name} must be an integer from {low} to {high}")
    return value
