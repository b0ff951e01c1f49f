"""A run's assessments: what the step checks found wrong in it (agentstream.evaluation)."""

from __future__ import annotations

from dataclasses import dataclass

from agentstream.events.base import RunEvent, _register

__all__ = ["EvalVerdict"]


@_register
@dataclass(frozen=True, slots=True)
class EvalVerdict(RunEvent):
    """A step check failed. An assessment, not a decision: the run goes on as it would have."""

    step: int
    check_name: str  # schema, grounding, repetition, answer_facts, intent, procedure
    severity: str  # warning, critical, or error (the check itself failed)
    reason: str
    evidence_json: str
    checks_version: str
