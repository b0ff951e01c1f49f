"""Alert rules: which rolling rate, over what, how high, and what happens when it trips.

A rule is operator input, read from the control topic by a long-running process: every field is
checked here, once, with a message naming the field, so a bad rule is refused when it is set and
never reaches the monitor."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

# metric -> what one sample is. Rates are shares of their samples in the window; the latency is the
# window's p95; the cost is the window's mean per ended run.
METRICS: dict[str, str] = {
    "tool_error_rate": "an authorized tool call's result: 1 when it is an error",
    "loop_rate": "an ended run: 1 when a loop was detected in it",
    "ungrounded_rate": "a requested tool call: 1 when the grounding check failed on it",
    "intent_mismatch_rate": "a requested tool call: 1 when the intent check failed on it",
    "check_failure_rate": "a requested tool call: 1 when any step check failed on it",
    "step_latency_p95_ms": "a step: journal milliseconds from its model call request to the next step's (or the end)",
    "cost_per_run_usd": "an ended run: what its settled calls cost",
    "judge_failure_rate": "a judge verdict: 1 when the judge failed the step or run",
}
GROUPS = ("tenant", "tool", "version")  # what a rule's windows are kept per (always within a tenant)
ACTIONS = ("alert", "disable_tool", "halt_tenant", "rollback")
MAX_WINDOW_S = 7 * 86_400


class AlertRuleError(ValueError):
    """A rule that cannot be set: the message names the field and what it takes."""


@dataclass(frozen=True, slots=True)
class AlertRule:
    rule_id: str
    metric: str
    threshold: float
    group_by: str = "tenant"
    tenant: str = ""  # "" : every tenant (each its own windows)
    window_s: int = 300
    min_samples: int = 10
    action: str = "alert"
    webhook: str = ""

    def to_json(self) -> str:
        return orjson.dumps(asdict(self)).decode()


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise AlertRuleError(message)


def parse_rule(raw: dict[str, Any]) -> AlertRule:
    known = set(AlertRule.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    _require(not unknown, f"unknown field(s) {', '.join(unknown)}; a rule has {', '.join(sorted(known))}")
    try:
        rule = AlertRule(**raw)
    except TypeError as exc:
        raise AlertRuleError(f"incomplete rule: {exc}") from None
    rid = rule.rule_id
    _require(isinstance(rid, str) and 0 < len(rid) <= 64 and all(c.isalnum() or c in "-_." for c in rid),
             "rule_id: 1-64 characters of letters, digits, - _ .")  # fmt: skip
    _require(rule.metric in METRICS, f"metric must be one of {', '.join(METRICS)}, not {rule.metric!r}")
    _require(rule.group_by in GROUPS, f"group_by must be one of {', '.join(GROUPS)}, not {rule.group_by!r}")
    _require(rule.action in ACTIONS, f"action must be one of {', '.join(ACTIONS)}, not {rule.action!r}")
    _require(
        isinstance(rule.threshold, int | float) and not isinstance(rule.threshold, bool) and math.isfinite(rule.threshold)
        and rule.threshold >= 0,
        "threshold must be a finite number >= 0",
    )  # fmt: skip
    _require(isinstance(rule.window_s, int) and 10 <= rule.window_s <= MAX_WINDOW_S,
             f"window_s must be a whole number of seconds in 10..{MAX_WINDOW_S}")  # fmt: skip
    _require(isinstance(rule.min_samples, int) and 1 <= rule.min_samples <= 1_000_000,
             "min_samples must be a whole number in 1..1000000")  # fmt: skip
    _require(isinstance(rule.tenant, str) and len(rule.tenant) <= 128, "tenant must be a tenant id or empty")
    _require(rule.action != "disable_tool" or rule.group_by == "tool",
             "action disable_tool needs group_by tool (it disables the tool whose rate tripped)")  # fmt: skip
    _require(rule.action != "rollback" or rule.group_by == "version",
             "action rollback needs group_by version (it rolls back the version whose rate tripped)")  # fmt: skip
    if rule.webhook:
        parts = urlsplit(str(rule.webhook))
        _require(parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.username
                 and not parts.password, "webhook must be an http(s) URL without credentials in it")  # fmt: skip
    return rule


def parse_rule_json(text: str) -> AlertRule:
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise AlertRuleError(f"a rule is a JSON object; this is not JSON ({exc})") from None
    _require(isinstance(raw, dict), "a rule is a JSON object")
    return parse_rule(raw)
