"""The API's closed vocabularies: every place that compares or emits one of these names uses the enum.

`StrEnum` members are `str`s: they compare equal to the plain strings in JSON, journal records and
older clients, and format as their value.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """A run's status as the API shows it (`awaiting_approval` is derived: running, paused on a person)."""

    QUEUED = "queued"
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    HALTED = "halted"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """Ended for good: nothing will ever change the run again."""
        return self in TERMINAL_STATUSES

    @property
    def settled(self) -> bool:
        """Ended, or halted and waiting for a resume: nothing happens until a client acts."""
        return self in SETTLED_STATUSES


TERMINAL_STATUSES = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})
SETTLED_STATUSES = TERMINAL_STATUSES | {RunStatus.HALTED}


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"  # denied by the deadline, not by a person


class ApprovalDecision(StrEnum):
    APPROVE = "approve"
    DENY = "deny"


class CostGroup(StrEnum):
    """How `GET /v1/costs` groups a tenant's spend (a tenant sees its own only: no `tenant` group)."""

    RUN = "run"
    TOOL = "tool"
    MODEL = "model"
