"""The scripted judge: how the scripted model answers a judge run (agentstream.judge), in any
scenario, since a judge task carries no scenario marker. A test double, deterministic: it fails a
trajectory in which an automated check failed (inconsistent) or that has no final answer (no
success), and passes the rest. Never a grader of anything real: the README shows a real provider."""

from __future__ import annotations

import orjson

from agentstream.judge.rubric import JUDGE_LINE


def is_judge_task(task: str) -> bool:
    return task.startswith(JUDGE_LINE)


def scripted_grade(task: str) -> str:
    consistent = "[automated check failed" not in task
    success = "\nFINAL ANSWER:" in task and "\nRUN FAILED" not in task
    why = []
    if not consistent:
        why.append("an automated check failed at a step")
    if not success:
        why.append("the run has no final answer")
    explanation = "; ".join(why) or "actions follow the stated reasoning and the answer is grounded"
    return orjson.dumps({"consistent": consistent, "success": success, "explanation": explanation}).decode()
