"""pass^k: how reliably a scenario set succeeds, not just how often. Pure.

A trial succeeds when the run completed, its final answer holds what the task expects, and no step
check failed on the way (the procedure counts, not only the answer; a check that itself broke,
severity "error", is not the run's failure). pass@1 is the
share of successful trials; pass^k the chance that k trials of a task ALL succeed, estimated per
task from n >= k trials as C(c, k) / C(n, k) (c successes) and averaged over tasks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from math import comb

from agentstream.events import EvalVerdict, RunCompleted, RunEvent


@dataclass(frozen=True, slots=True)
class Trial:
    task: str
    variant: str
    completed: bool
    answered: bool  # the final answer holds what the task expects
    procedure_failures: tuple[str, ...]  # the step checks that failed

    @property
    def passed(self) -> bool:
        return self.completed and self.answered and not self.procedure_failures


def judge_trial(task: str, variant: str, events: Sequence[RunEvent], expect: str) -> Trial:
    final = next((e for e in events if isinstance(e, RunCompleted)), None)
    failures = tuple(
        sorted({e.check_name for e in events if isinstance(e, EvalVerdict) and e.severity in ("warning", "critical")})
    )
    answered = final is not None and expect.lower() in final.final_answer.lower()
    return Trial(task, variant, final is not None, answered, failures)


def pass_hat_k(successes: int, trials: int, k: int) -> float:
    if trials < k or k < 1:
        raise ValueError(f"pass^{k} needs at least {k} trials per task, not {trials}")
    return comb(successes, k) / comb(trials, k)


def report(trials: Sequence[Trial], k: int) -> dict[str, object]:
    by_task: dict[str, list[Trial]] = {}
    for trial in trials:
        by_task.setdefault(trial.task, []).append(trial)
    per_task: Mapping[str, dict[str, object]] = {
        task: {
            "trials": len(ts),
            "passed": sum(t.passed for t in ts),
            "variants": dict(sorted(Counter(t.variant for t in ts).items())),
            "pass_hat_k": round(pass_hat_k(sum(t.passed for t in ts), len(ts), k), 4),
            "failed_by": sorted({f"{t.variant}: " + ("not completed" if not t.completed else "wrong answer"
                                 if not t.answered else "procedure " + ",".join(t.procedure_failures))
                                 for t in ts if not t.passed}),
        }
        for task, ts in sorted(by_task.items())
    }  # fmt: skip
    hats = [float(v["pass_hat_k"]) for v in per_task.values()]  # type: ignore[arg-type]
    return {
        "tasks": len(per_task),
        "k": k,
        "trials": len(trials),
        "pass_at_1": round(sum(t.passed for t in trials) / len(trials), 4) if trials else 0.0,
        "pass_hat_k": round(sum(hats) / len(hats), 4) if hats else 0.0,
        "answer_only_pass_at_1": round(sum(t.completed and t.answered for t in trials) / len(trials), 4)
        if trials
        else 0.0,
        "by_task": per_task,
    }
