"""Rolling windows per rule and group, and when an alert is raised or cleared: pure.

Samples only append; the windows are judged on `tick`, at the journal time the monitor has read
up to, so a p95 over a busy window is computed once a tick, not once a sample."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from agentstream.monitor.rules import AlertRule
from agentstream.monitor.signals import Sample

# A window holds at most this many samples, the newest: a week-long window over a busy tenant
# must not hold a sample per step of the week in memory. Its value is then over the newest ones.
MAX_SAMPLES = 100_000


@dataclass
class Window:
    samples: deque[tuple[int, float]] = field(default_factory=deque)
    total: float = 0.0

    def add(self, ts_ms: int, value: float) -> None:
        self.samples.append((ts_ms, value))
        self.total += value
        if len(self.samples) > MAX_SAMPLES:
            self.total -= self.samples.popleft()[1]

    def prune(self, before_ms: int) -> None:
        while self.samples and self.samples[0][0] < before_ms:
            self.total -= self.samples.popleft()[1]

    def value(self, metric: str) -> float:
        if not self.samples:
            return 0.0
        if metric.endswith("_p95_ms"):
            ordered = sorted(v for _, v in self.samples)
            return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
        return self.total / len(self.samples)


@dataclass(frozen=True, slots=True)
class GroupKey:
    tenant: str
    tool: str = ""
    version: str = ""

    @property
    def text(self) -> str:
        return "/".join((self.tenant, self.tool, self.version))


@dataclass(frozen=True, slots=True)
class AlertChange:
    rule: AlertRule
    group: GroupKey
    raised: bool
    value: float
    samples: int
    at_ms: int


def group_of(rule: AlertRule, sample: Sample) -> GroupKey:
    return GroupKey(
        sample.tenant,
        sample.tool if rule.group_by == "tool" else "",
        sample.version if rule.group_by == "version" else "",
    )


class AlertBook:
    def __init__(self) -> None:
        self.rules: dict[str, AlertRule] = {}
        self._windows: dict[tuple[str, GroupKey], Window] = {}
        self.raised: dict[tuple[str, GroupKey], AlertChange] = {}

    def set_rule(self, rule: AlertRule) -> None:
        old = self.rules.get(rule.rule_id)
        self.rules[rule.rule_id] = rule
        if old is not None and old != rule:
            self._forget(rule.rule_id)  # a changed rule starts its windows afresh

    def drop_rule(self, rule_id: str) -> list[tuple[str, GroupKey]]:
        """Forgets a deleted rule; returns its alerts that were raised (to be cleared)."""
        self.rules.pop(rule_id, None)
        return self._forget(rule_id)

    def _forget(self, rule_id: str) -> list[tuple[str, GroupKey]]:
        for key in [k for k in self._windows if k[0] == rule_id]:
            del self._windows[key]
        gone = [k for k in self.raised if k[0] == rule_id]
        for key in gone:
            del self.raised[key]
        return gone

    def add(self, sample: Sample) -> None:
        for rule in self.rules.values():
            if rule.metric != sample.metric or (rule.tenant and rule.tenant != sample.tenant):
                continue
            key = (rule.rule_id, group_of(rule, sample))
            window = self._windows.get(key)
            if window is None:
                window = self._windows[key] = Window()
            window.add(sample.ts_ms, sample.value)

    def tick(self, now_ms: int) -> list[AlertChange]:
        """Judges every window at `now_ms`: an alert is raised when its window holds at least
        `min_samples` and its value is above the threshold, and cleared when it no longer is."""
        changes: list[AlertChange] = []
        for key, window in list(self._windows.items()):
            rule = self.rules[key[0]]
            window.prune(now_ms - rule.window_s * 1000)
            count = len(window.samples)
            value = window.value(rule.metric)
            tripped = count >= rule.min_samples and value > rule.threshold
            was = key in self.raised
            if tripped and not was:
                self.raised[key] = AlertChange(rule, key[1], True, value, count, now_ms)
                changes.append(self.raised[key])
            elif was and not tripped:
                del self.raised[key]
                changes.append(AlertChange(rule, key[1], False, value, count, now_ms))
            if not count and not was:
                del self._windows[key]  # an idle group costs nothing
        return changes
