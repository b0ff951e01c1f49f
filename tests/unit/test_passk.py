"""pass^k, pure: a trial passes on its answer AND its procedure; pass^k estimated from n >= k trials."""

from __future__ import annotations

import pytest

from agentstream.events import EvalVerdict, RunCompleted, RunEvent, RunStarted
from agentstream.mining.passk import Trial, judge_trial, pass_hat_k, report


def run(answer: str | None, *verdicts: str) -> list[RunEvent]:
    events: list[RunEvent] = [RunStarted("r/s", "r", "t", "m", "[]", 5, "")]
    events += [EvalVerdict(f"r/v{i}", "r", "t", 1, check, severity, "why", "{}", "1")
               for i, (check, _, severity) in enumerate(v.partition(":") for v in verdicts)]  # fmt: skip
    if answer is not None:
        events.append(RunCompleted("r/e", "r", "t", 2, answer, "done"))
    return events


def test_a_trial_passes_only_with_the_answer_and_a_clean_procedure() -> None:
    assert judge_trial("a", "ok", run("It is 396."), "396").passed
    assert not judge_trial("a", "x", run("It is 391."), "396").passed
    assert not judge_trial("a", "x", run(None), "396").passed
    lucky = judge_trial("a", "lucky", run("It is 396.", "answer_facts:warning"), "396")
    assert not lucky.passed and lucky.answered and lucky.procedure_failures == ("answer_facts",)
    assert judge_trial("a", "x", run("It is 396.", "grounding:error"), "396").passed  # a broken check is not the run's


def test_pass_hat_k_is_the_chance_k_trials_all_pass() -> None:
    assert pass_hat_k(5, 5, 5) == 1.0 and pass_hat_k(4, 5, 5) == 0.0
    assert pass_hat_k(8, 10, 5) == pytest.approx(56 / 252)
    with pytest.raises(ValueError, match="at least 5 trials"):
        pass_hat_k(3, 4, 5)


def test_the_report_tells_pass_at_1_from_pass_hat_k_and_answer_only() -> None:
    trials = [Trial("a", "ok", True, True, ())] * 5 + [Trial("b", "ok", True, True, ())] * 4
    trials.append(Trial("b", "lucky", True, True, ("answer_facts",)))
    out = report(trials, 5)
    assert out["pass_at_1"] == 0.9 and out["answer_only_pass_at_1"] == 1.0 and out["pass_hat_k"] == 0.5
    assert out["by_task"]["b"]["failed_by"] == ["lucky: procedure answer_facts"]  # type: ignore[index]
