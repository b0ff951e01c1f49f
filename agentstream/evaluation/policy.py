"""A tenant's evaluation policy: the procedures its runs must follow, the tools that may poll, the
constants an argument may come from, and the checks it turns off.

Set with the tenant's tool policy (`agentstream tools policy --eval JSON`, key `eval` of the policy
JSON), pinned into the run at its start (`RunStarted.eval_json`), so a run is judged by the rules
of the day it started and replay judges it the same way.

    {"requires": {"transfer_funds": ["lookup"]},   # a prior successful call matching each pattern
     "polling": ["get_current_time", "wait_*"],     # repeating these is not a repetition
     "constants": ["USD", "Europe/Lisbon"],         # values an argument may use without a source
     "disabled": ["intent"]}                        # checks not run for this tenant
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Any

import orjson

CHECKS = ("schema", "grounding", "repetition", "answer_facts", "intent", "procedure")
_FIELDS = ("requires", "polling", "constants", "disabled")
_MAX_ENTRIES = 1000  # a policy is a few rules; a huge one is a mistake, refused when set


class EvalPolicyError(ValueError):
    """An evaluation policy that cannot be applied; the message names the field and what it must be."""


@dataclass(frozen=True, slots=True)
class EvalPolicy:
    requires: dict[str, tuple[str, ...]] = field(default_factory=dict)
    polling: tuple[str, ...] = ()
    constants: tuple[str, ...] = ()
    disabled: frozenset[str] = frozenset()

    def runs(self, check: str) -> bool:
        return check not in self.disabled

    def polls(self, tool: str) -> bool:
        return any(fnmatchcase(tool, pattern) for pattern in self.polling)

    def missing_before(self, tool: str, done: tuple[str, ...] | frozenset[str]) -> list[str]:
        """The patterns `tool` requires that no earlier successful call matched."""
        return [p for p in self.requires.get(tool, ()) if not any(fnmatchcase(d, p) for d in done)]


NO_POLICY = EvalPolicy()


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise EvalPolicyError(f"eval policy: {where} must be a list of non-empty strings, not {value!r:.80}")
    if len(value) > _MAX_ENTRIES:
        raise EvalPolicyError(f"eval policy: {where} has {len(value)} entries (at most {_MAX_ENTRIES})")
    return tuple(value)


def _object(raw: str | dict[str, Any]) -> dict[str, Any]:
    try:
        value = orjson.loads(raw) if isinstance(raw, str) else raw
    except orjson.JSONDecodeError as exc:
        raise EvalPolicyError(f"eval policy: not JSON: {exc}") from None
    if isinstance(value, dict):
        return value
    raise EvalPolicyError(f"eval policy: expected a JSON object, not {type(value).__name__}")


def parse_policy(raw: str | dict[str, Any] | None) -> EvalPolicy:
    """The policy in `raw` (JSON text or a mapping; empty: no rules), every field checked."""
    if not raw:
        return NO_POLICY
    raw = _object(raw)
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise EvalPolicyError(f"eval policy: unknown field(s) {', '.join(unknown)} (known: {', '.join(_FIELDS)})")
    requires = raw.get("requires", {})
    if not isinstance(requires, dict):
        raise EvalPolicyError("eval policy: requires must map a tool name to a list of tool patterns")
    disabled = _strings(raw.get("disabled", []), "disabled")
    if bad := [c for c in disabled if c not in CHECKS]:
        raise EvalPolicyError(
            f"eval policy: disabled names unknown check(s) {', '.join(bad)} (known: {', '.join(CHECKS)})"
        )
    return EvalPolicy(
        requires={str(tool): _strings(patterns, f"requires.{tool}") for tool, patterns in requires.items()},
        polling=_strings(raw.get("polling", []), "polling"),
        constants=_strings(raw.get("constants", []), "constants"),
        disabled=frozenset(disabled),
    )


@lru_cache(maxsize=256)
def pinned_policy(raw: str) -> EvalPolicy:
    """The policy a run pinned. Checked when the tenant set it; one that no longer parses (written
    by a later version) judges by no rules rather than failing the run."""
    try:
        return parse_policy(raw)
    except EvalPolicyError:
        return NO_POLICY
