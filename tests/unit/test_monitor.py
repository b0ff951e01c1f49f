"""The monitor's pure half: rules refused with the field named, journal events into samples, and
windows that raise and clear alerts at journal time (the same journal gives the same alerts)."""

from __future__ import annotations

from typing import Any

import pytest

from agentstream.events import (
    BudgetReserved,
    BudgetSettled,
    JudgeVerdict,
    LlmCallRequested,
    LoopDetected,
    RunCompleted,
    RunEvent,
    RunStarted,
    ToolCallAuthorized,
    ToolCallCompleted,
    ToolCallRequested,
)
from agentstream.monitor.alerts import AlertBook
from agentstream.monitor.rules import AlertRule, AlertRuleError, parse_rule, parse_rule_json
from agentstream.monitor.signals import Sample, Signals


def rule(**over: Any) -> AlertRule:
    return parse_rule({"rule_id": "r1", "metric": "tool_error_rate", "threshold": 0.5, "min_samples": 3, **over})


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"metric": "vibes"}, "metric must be one of"),
        ({"threshold": float("nan")}, "threshold"),
        ({"threshold": -1}, "threshold"),
        ({"threshold": True}, "threshold"),
        ({"window_s": 1}, "window_s"),
        ({"window_s": 10**9}, "window_s"),
        ({"min_samples": 0}, "min_samples"),
        ({"group_by": "planet"}, "group_by"),
        ({"action": "delete_everything"}, "action"),
        ({"action": "disable_tool"}, "needs group_by tool"),
        ({"action": "rollback"}, "needs group_by version"),
        ({"webhook": "ftp://x"}, "webhook"),
        ({"webhook": "https://user:pw@hooks.example/x"}, "without credentials"),
        ({"rule_id": "../../etc"}, "rule_id"),
        ({"surprise": 1}, "unknown field"),
    ],
)
def test_a_bad_rule_is_refused_naming_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(AlertRuleError, match=field):
        rule(**raw)


def test_a_rule_survives_its_json_and_bad_json_is_refused() -> None:
    r = rule(group_by="tool", action="disable_tool", webhook="https://hooks.example/a")
    assert parse_rule_json(r.to_json()) == r
    with pytest.raises(AlertRuleError, match="not JSON"):
        parse_rule_json("{nope")
    with pytest.raises(AlertRuleError, match="JSON object"):
        parse_rule_json("[1]")
    with pytest.raises(AlertRuleError, match="incomplete"):
        parse_rule_json('{"rule_id": "x"}')


def run_events(run: str, *, errors: int, ok: int, looped: bool = False, cost: float = 0.0) -> list[RunEvent]:
    t = "acme"
    events: list[RunEvent] = [RunStarted(f"{run}/s", run, t, "m", "[]", 10, "")]
    for i in range(errors + ok):
        call = f"{run}/c{i}"
        events += [
            LlmCallRequested(f"{run}/l{i}", run, t, i, f"{run}/l{i}", "m", "[]", "[]", 100),
            ToolCallRequested(f"{run}/q{i}", run, t, i, call, "tc", "search", "{}", "k", 1000),
            ToolCallAuthorized(f"{run}/a{i}", run, t, i, call, "tc", "search", "1", "{}", "k", 1000, "gate", 0, "", ""),
            ToolCallCompleted(f"{run}/d{i}", run, t, i, call, "search", "k", "x", i < errors, 1.0),
        ]
    if looped:
        events.append(LoopDetected(f"{run}/loop", run, t, 1, "tool_call", "warn", "sig", 3, 5, "{}"))
    events.append(BudgetReserved(f"{run}/br", run, t, 9, f"{run}/last", "model", "", cost, 10, 0.0, 0.0, "v1", 0))
    events.append(RunCompleted(f"{run}/end", run, t, 3, "ok", "done"))
    events.append(BudgetSettled(f"{run}/bs", run, t, 9, f"{run}/last", "model", "", "m", cost, 1, 0, 1, 0.0, "v1"))
    return events


def feed(signals: Signals, events: list[RunEvent], start_ms: int = 1_000) -> list[Sample]:
    out: list[Sample] = []
    for i, event in enumerate(events):
        out += signals.feed(event, start_ms + i * 10)
    return out


def test_events_become_samples_once_each_and_cost_waits_for_the_last_settlement() -> None:
    signals = Signals()
    events = run_events("r", errors=2, ok=1, looped=True, cost=0.25)
    samples = feed(signals, events + events)  # every event twice: re-emitted duplicates count once
    errors = [s.value for s in samples if s.metric == "tool_error_rate"]
    assert errors == [1.0, 1.0, 0.0] and all(s.tool == "search" for s in samples if s.metric == "tool_error_rate")
    assert [s.value for s in samples if s.metric == "loop_rate"] == [1.0]
    cost = [s for s in samples if s.metric == "cost_per_run_usd"]
    # Sampled once the settlement after the end came in, not at the end.
    assert len(cost) == 1 and cost[0].value == pytest.approx(0.25) and cost[0].ts_ms == 1_000 + 10 * (len(events) - 1)
    latencies = [s.value for s in samples if s.metric == "step_latency_p95_ms"]
    assert latencies == [40.0, 40.0, 40.0 + 20.0]  # 4 events a step, 10 ms apart; the last one to the end
    assert signals.tracked_runs == 0


def test_an_unauthorized_result_is_no_tool_error_and_a_verdict_marks_its_step() -> None:
    signals = Signals()
    run, t = "r", "acme"
    samples = feed(signals, [
        RunStarted(f"{run}/s", run, t, "m", "[]", 10, ""),
        ToolCallCompleted(f"{run}/denied", run, t, 1, "c0", "search", "k", "denied", True, 0.0),
    ])  # fmt: skip
    assert not [s for s in samples if s.metric == "tool_error_rate"]


def test_an_alert_is_raised_over_the_threshold_with_enough_samples_and_cleared_when_it_falls() -> None:
    book = AlertBook()
    book.set_rule(rule(window_s=60))

    def add(ts: int, v: float) -> None:
        book.add(Sample("tool_error_rate", "acme", "search", "", ts, v))

    add(1_000, 1.0)
    add(2_000, 1.0)
    assert book.tick(2_000) == []  # two samples: below min_samples
    add(3_000, 0.0)
    raised = book.tick(3_000)
    assert len(raised) == 1 and raised[0].raised and raised[0].value == pytest.approx(2 / 3) and raised[0].samples == 3
    assert book.tick(3_500) == []  # raised once, not again
    for ts in range(4_000, 10_000, 1_000):
        add(ts, 0.0)
    cleared = book.tick(10_000)
    assert len(cleared) == 1 and not cleared[0].raised
    # Another tenant has its own windows; a tenant-scoped rule ignores the others.
    book.set_rule(rule(rule_id="r2", tenant="zeta"))
    book.add(Sample("tool_error_rate", "acme", "search", "", 11_000, 1.0))
    assert all(c.rule.rule_id == "r1" for c in book.tick(11_000))


def test_windows_forget_what_is_older_than_the_window_and_p95_is_the_95th_percentile() -> None:
    book = AlertBook()
    book.set_rule(parse_rule({"rule_id": "lat", "metric": "step_latency_p95_ms", "threshold": 900,
                              "min_samples": 20, "window_s": 10}))  # fmt: skip
    for i in range(100):
        book.add(Sample("step_latency_p95_ms", "acme", "", "", 1_000 + i, 1_000.0 if i >= 94 else 10.0))
    changes = book.tick(2_000)
    assert len(changes) == 1 and changes[0].value == 1_000.0  # 6 of 100 slow: the p95 is slow
    assert book.tick(30_000)[0].raised is False  # all of it older than 10 s now


def test_the_same_journal_gives_the_same_alerts() -> None:
    def replay() -> list[tuple[str, bool, float, int]]:
        signals, book = Signals(), AlertBook()
        book.set_rule(rule(group_by="tool", threshold=0.3))
        changes = []
        for i in range(6):
            events = run_events(f"r{i}", errors=2 if i < 2 else 0, ok=1 if i < 2 else 3)
            for sample in feed(signals, events, 1_000 * i):
                book.add(sample)
            changes += [(c.group.text, c.raised, c.value, c.at_ms) for c in book.tick(1_000 * i + 500)]
        return changes

    first = replay()
    assert [raised for _, raised, _, _ in first] == [True, False] and first == replay()


def test_a_window_holds_the_newest_samples_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from agentstream.monitor import alerts

    monkeypatch.setattr(alerts, "MAX_SAMPLES", 10)
    window = alerts.Window()
    for ts in range(25):
        window.add(ts, 1.0 if ts >= 15 else 0.0)
    assert len(window.samples) == 10 and window.value("tool_error_rate") == 1.0


def test_a_judge_grade_after_the_runs_end_is_rated_once_on_the_runs_version() -> None:
    signals = Signals()
    events = run_events("r", errors=0, ok=1)
    events[0] = RunStarted("r/s", "r", "acme", "m", "[]", 10, "", orchestrator_version="v2")
    feed(signals, events)
    assert signals.tracked_runs == 0  # ended and settled: no longer tracked
    failed = JudgeVerdict("r/judge/judge-rubric-v1", "r", "acme", "judge-r", "judge-rubric-v1", True, False, False,
                          "no answer", True)  # fmt: skip
    samples = signals.feed(failed, 9_000) + signals.feed(failed, 9_100)
    assert [(s.metric, s.value, s.version, s.tenant) for s in samples] == [("judge_failure_rate", 1.0, "v2", "acme")]
