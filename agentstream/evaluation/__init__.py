"""Step-level trajectory checks: deterministic, cheap judgements of every step of every run.

- policy: a tenant's evaluation policy (procedures, polling tools, constants), pinned per run
- facts: the facts in a text and the corpus of what a run has seen
- checks: the checks themselves, pure functions, and `assess`, which keeps a failing check contained

The orchestrator runs them as it folds a run's events (processors/orchestrator/evaluating.py) and
journals an `EvalVerdict` only for a failed check, so a clean step costs no journal event.
"""

from agentstream.evaluation.checks import CHECKS_VERSION, CallView, Finding, Outcome
from agentstream.evaluation.policy import EvalPolicy, EvalPolicyError, parse_policy, pinned_policy

__all__ = [
    "CHECKS_VERSION",
    "CallView",
    "EvalPolicy",
    "EvalPolicyError",
    "Finding",
    "Outcome",
    "parse_policy",
    "pinned_policy",
]
