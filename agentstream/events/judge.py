"""A judge's grade of a run (agentstream.judge), journaled on the run it grades."""

from __future__ import annotations

from dataclasses import dataclass

from agentstream.events.base import RunEvent, _register

__all__ = ["JudgeVerdict"]


@_register
@dataclass(frozen=True, slots=True)
class JudgeVerdict(RunEvent):
    """The judge model's grade of this run under a versioned rubric, from a judge run of its own
    (`judge_run_id`, with its own journal and cost). An assessment: the run is not changed by it."""

    judge_run_id: str
    rubric_version: str
    consistent: bool  # reasoning and actions agree, arguments grounded
    success: bool  # the final answer completes the task
    passed: bool
    explanation: str  # the judge's words, or why no grade could be read from its answer
    graded: bool  # False: the judge run failed or its answer was not a grade
