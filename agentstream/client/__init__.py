"""Client-side helpers for producing run requests and reading run journals.

`RunsClient` speaks the run API (HTTP) as a tenant with an API key; `JournalClient` is the
Kafka-level client, producing to and reading the platform's topics directly."""

from agentstream.client.http import (
    ApiError,
    Conflict,
    InvalidRequest,
    NotFound,
    RateLimited,
    RunEventMessage,
    RunsClient,
    Unauthenticated,
)
from agentstream.client.journal import JournalClient, RunBudget, RunRequest
from agentstream.client.trees import TreeEventMessage
from agentstream.contract.resources import Approval, CostReport, Run, RunCost, RunPage, RunTree
from agentstream.contract.vocab import ApprovalStatus, CostGroup, RunStatus

__all__ = [
    "ApiError",
    "Approval",
    "ApprovalStatus",
    "Conflict",
    "CostGroup",
    "CostReport",
    "InvalidRequest",
    "JournalClient",
    "NotFound",
    "RateLimited",
    "Run",
    "RunBudget",
    "RunCost",
    "RunEventMessage",
    "RunPage",
    "RunRequest",
    "RunStatus",
    "RunTree",
    "RunsClient",
    "TreeEventMessage",
    "Unauthenticated",
]
