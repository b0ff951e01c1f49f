"""Deterministic ids. Every id the core needs is derived from the run id and the step, so a
re-driven decision produces the same id and is recognised as a duplicate instead of a new fact."""

from __future__ import annotations

import hashlib


def step_prefix(run_id: str, step: int) -> str:
    return f"{run_id}/s{step:04d}"


def llm_call_id(run_id: str, step: int) -> str:
    return f"{step_prefix(run_id, step)}/llm"


def tool_call_id(run_id: str, step: int, index: int) -> str:
    return f"{step_prefix(run_id, step)}/tool{index:02d}"


def requested_event_id(call_id: str) -> str:
    return f"{call_id}/requested"


def completed_event_id(call_id: str) -> str:
    return f"{call_id}/completed"


def failed_event_id(call_id: str, attempt: int) -> str:
    return f"{call_id}/failed/a{attempt:02d}"


def run_requested_id(run_id: str) -> str:
    return f"{run_id}/requested"


def run_started_id(run_id: str) -> str:
    return f"{run_id}/started"


def cancel_requested_id(run_id: str) -> str:
    return f"{run_id}/cancel"


def terminal_id(run_id: str) -> str:
    # One id for every terminal kind: a run ends once, and compaction keeps exactly one ending.
    return f"{run_id}/terminal"


def run_of_event_id(event_id: str) -> str:
    return event_id.split("/", 1)[0]


def halt_id(run_id: str, halt: int) -> str:
    return f"{run_id}/halt{halt:02d}"


def resume_id(run_id: str, halt: int) -> str:
    # One resume per halt: two clients resuming the same halt write the same event.
    return f"{run_id}/resume{halt:02d}"


def policy_decided_id(call_id: str) -> str:
    return f"{call_id}/policy"


def authorized_id(call_id: str) -> str:
    return f"{call_id}/authorized"


def approval_requested_id(call_id: str) -> str:
    return f"{call_id}/approval"


def approval_decided_id(call_id: str, *, by_timeout: bool) -> str:
    # Distinct ids for a person and the timer, so compaction keeps both and the journal order
    # (first decision wins) survives; a second person's decision overwrites the first's record
    # only with an identical id, and is ignored by every reader anyway.
    return f"{call_id}/approval/{'timeout' if by_timeout else 'decided'}"


def approval_id(call_id: str) -> str:
    return "apr_" + hashlib.sha256(call_id.encode()).hexdigest()[:24]


def compaction_call_id(run_id: str, step: int, compaction: int) -> str:
    """The summarization model call of a run's `compaction`-th context compaction."""
    return f"{step_prefix(run_id, step)}/compact{compaction:02d}"


def compacted_id(run_id: str, step: int, compaction: int) -> str:
    return f"{step_prefix(run_id, step)}/compacted{compaction:02d}"


def child_run_id(parent_call_id: str) -> str:
    """The run a parent's spawn call starts: derived from the call alone, so a parent that decides
    the call again after a crash names the same child (re-sent, it starts nothing). Shaped like the
    gateway's run ids ("run_" + 24 hex), so the API and CLI take it as any other run."""
    return "run_" + hashlib.sha256(f"child\x00{parent_call_id}".encode()).hexdigest()[:24]
