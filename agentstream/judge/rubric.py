"""The judge's rubric: the task a judge run is given, and how its answer is read. Pure.

The rubric is versioned: a verdict names the version it was graded under, so grades made under
different rubrics are never mixed up. The trajectory shown to the judge is bounded (each text cut,
the whole capped) so a huge run cannot make a huge judge prompt; what was cut is said."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from agentstream.events import (
    EvalVerdict,
    LlmCallCompleted,
    RunCompleted,
    RunEvent,
    RunFailed,
    RunRequested,
    ToolCallCompleted,
)

RUBRIC_VERSION = "judge-rubric-v1"
# The first line of every judge task: how a judge run (and the scripted judge) is recognised.
JUDGE_LINE = f"AGENTSTREAM TRAJECTORY JUDGE ({RUBRIC_VERSION})"
TEXT_CHARS = 600
TASK_CHARS = 24_000

RUBRIC = """Grade the agent trajectory below. Answer with ONLY one JSON object, no other text:
{"consistent": true|false, "success": true|false, "explanation": "<one or two sentences>"}
- consistent: at every step the action the agent took matches the reasoning it stated, and every
  argument it passed comes from the task or an earlier observation (nothing invented).
- success: the final answer completes the task, and its facts appear in the observations.
A trajectory with a failed automated check listed is inconsistent unless the check is plainly wrong."""


class JudgeAnswerError(ValueError):
    """A judge's answer that is not a grade: the message says what was wrong with it."""


@dataclass(frozen=True, slots=True)
class Grade:
    consistent: bool
    success: bool
    explanation: str

    @property
    def passed(self) -> bool:
        return self.consistent and self.success


def _cut(text: str, limit: int = TEXT_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[:limit]}… [{len(text) - limit} more chars]"


def judge_task(events: Sequence[RunEvent]) -> str:
    lines = [JUDGE_LINE, RUBRIC, ""]
    for event in events:
        match event:
            case RunRequested():
                lines.append(f"TASK: {_cut(event.task, 2_000)}")
            case LlmCallCompleted():
                calls = orjson.loads(event.tool_calls_json or "[]")
                said = f" said {_cut(event.text)!r}" if event.text.strip() else ""
                acted = "; ".join(f"{c.get('name')}({_cut(str(c.get('arguments_json', '')), 300)})" for c in calls)
                lines.append(f"STEP {event.step}: model{said}" + (f" then called {acted}" if acted else ""))
            case ToolCallCompleted():
                mark = "ERROR " if event.is_error else ""
                lines.append(f"STEP {event.step}: {event.tool} returned {mark}{_cut(event.content)}")
            case RunCompleted():
                lines.append(f"FINAL ANSWER: {_cut(event.final_answer, 2_000)}")
            case RunFailed():
                lines.append(f"RUN FAILED ({event.error_type}): {_cut(event.reason)}")
            case EvalVerdict():
                lines.append(
                    f"STEP {event.step}: [automated check failed: {event.check_name}] {_cut(event.reason, 300)}"
                )
    text = "\n".join(lines)
    if len(text) > TASK_CHARS:
        text = text[:TASK_CHARS] + f"\n[trajectory cut: {len(text) - TASK_CHARS} more chars not shown]"
    return text


def parse_grade(answer: str) -> Grade:
    """The grade in a judge's answer: the first JSON object in it, with both booleans."""
    start, end = answer.find("{"), answer.rfind("}")
    if start < 0 or end <= start:
        raise JudgeAnswerError(f"no JSON object in the judge's answer: {_cut(answer, 200)!r}")
    try:
        raw = orjson.loads(answer[start : end + 1])
    except orjson.JSONDecodeError as exc:
        raise JudgeAnswerError(f"the judge's answer is not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise JudgeAnswerError("the judge's answer is not a JSON object")
    consistent, success = raw.get("consistent"), raw.get("success")
    if not isinstance(consistent, bool) or not isinstance(success, bool):
        raise JudgeAnswerError("the judge's answer needs boolean 'consistent' and 'success'")
    return Grade(consistent, success, _cut(str(raw.get("explanation", "")), 1_000))
