"""The judge's pure half: the bounded task it is given, reading its answer, the sample, the
verdict a judge run's end gives, and the scripted judge (a test double) grading by the rubric."""

from __future__ import annotations

import pytest

from agentstream.doubles.scripted_model.judge import is_judge_task, scripted_grade
from agentstream.events import LlmCallCompleted, RunCompleted, RunFailed, RunRequested, ToolCallCompleted
from agentstream.judge.judging import verdict_id, verdict_of
from agentstream.judge.policy import JudgePolicy, JudgePolicyError, judge_run_id, sampled
from agentstream.judge.rubric import JUDGE_LINE, RUBRIC_VERSION, TASK_CHARS, JudgeAnswerError, judge_task, parse_grade
from agentstream.routing.tiers import choose_tier


def trajectory(final: str = "It is 42.", tool_text: str = "42") -> list[object]:
    return [
        RunRequested("r/req", "r", "acme", "[scenario:x] what is 6*7?", "scripted", ["calculator"], 5, "r"),
        LlmCallCompleted("r/l1", "r", "acme", 1, "r/l1", "scripted", "m", "I will compute it.",
                         '[{"id": "t", "name": "calculator", "arguments_json": "{\\"expression\\": \\"6*7\\"}"}]',
                         "tool_calls", 10, 5, 0, 1.0, 1),
        ToolCallCompleted("r/t1", "r", "acme", 1, "r/c1", "calculator", "k", tool_text, False, 1.0),
        RunCompleted("r/end", "r", "acme", 2, final, "done"),
    ]  # fmt: skip


def test_the_task_names_the_rubric_and_shows_the_trajectory_bounded() -> None:
    task = judge_task(trajectory())  # type: ignore[arg-type]
    assert task.startswith(JUDGE_LINE) and RUBRIC_VERSION in task and is_judge_task(task)
    assert "TASK: [scenario:x] what is 6*7?" in task and "said 'I will compute it.' then called calculator" in task
    assert "STEP 1: calculator returned 42" in task and "FINAL ANSWER: It is 42." in task
    huge = judge_task(trajectory(tool_text="x" * 50_000) * 40)  # type: ignore[arg-type]
    assert len(huge) < TASK_CHARS + 200 and "trajectory cut" in huge and "more chars]" in huge


@pytest.mark.parametrize(
    ("answer", "grade"),
    [
        ('{"consistent": true, "success": true, "explanation": "fine"}', (True, True, True)),
        (
            'Sure! {"consistent": false, "success": true, "explanation": "invented"} hope that helps',
            (False, True, False),
        ),
    ],
)
def test_a_grade_is_read_from_the_answer(answer: str, grade: tuple[bool, bool, bool]) -> None:
    got = parse_grade(answer)
    assert (got.consistent, got.success, got.passed) == grade


@pytest.mark.parametrize(
    ("answer", "message"),
    [("I think it is fine", "no JSON object"), ("{nope}", "not valid JSON"),
     ('{"consistent": "yes", "success": true}', "boolean"), ('{"success": true}', "boolean")],
)  # fmt: skip
def test_an_answer_that_is_no_grade_is_refused_saying_why(answer: str, message: str) -> None:
    with pytest.raises(JudgeAnswerError, match=message):
        parse_grade(answer)


def test_the_sample_is_a_pure_function_of_the_run_id_and_judge_runs_are_never_sampled() -> None:
    ids = [f"run-{i}" for i in range(4000)]
    share = sum(sampled(r, 0.25) for r in ids) / len(ids)
    assert 0.22 < share < 0.28 and [sampled(r, 0.25) for r in ids] == [sampled(r, 0.25) for r in ids]
    assert not any(sampled(r, 0.0) for r in ids) and all(sampled(r, 1.0) for r in ids)
    assert not sampled(judge_run_id("run-1"), 1.0)


@pytest.mark.parametrize("bad", [{"rate": 1.5}, {"rate": float("nan")}, {"budget_usd": 0}, {"model": ""}])
def test_a_bad_policy_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(JudgePolicyError):
        JudgePolicy(**{"tenant": "acme", "rate": 0.5, **bad}).check()  # type: ignore[arg-type]


def test_a_judge_runs_end_becomes_the_verdict_and_a_failure_is_a_verdict_too() -> None:
    ok = verdict_of(
        "r", RunCompleted("judge-r/end", "judge-r", "acme", 1, '{"consistent": true, "success": false}', "done")
    )
    assert ok.event_id == verdict_id("r") and ok.run_id == "r" and ok.judge_run_id == "judge-r"
    assert ok.graded and not ok.passed and not ok.success
    garbled = verdict_of("r", RunCompleted("judge-r/end", "judge-r", "acme", 1, "looks good to me", "done"))
    assert not garbled.graded and "no JSON object" in garbled.explanation
    failed = verdict_of("r", RunFailed("judge-r/end", "judge-r", "acme", 1, "budget", "over budget"))
    assert not failed.graded and "RunFailed" in failed.explanation


def test_the_scripted_judge_grades_by_the_rubric() -> None:
    clean = parse_grade(scripted_grade(judge_task(trajectory())))  # type: ignore[arg-type]
    assert clean.passed
    no_answer = judge_task(trajectory()[:-1])  # type: ignore[arg-type]
    assert not parse_grade(scripted_grade(no_answer)).success


def test_a_judge_run_is_routed_to_the_judge_tier() -> None:
    assert choose_tier(1, (), "judge") == ("judge", "tier judge requested by the run")
