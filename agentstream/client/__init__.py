"""Client-side helpers for producing run requests and reading run journals.

`RunsClient` speaks the run API (HTTP) as a tenant with an API key; `JournalClient` is the
Kafka-level client, producing to and reading the platform's topics directly."""

from agentstream.client.http import (
    ApiError,
    Conflict,
    InvalidRequest,
    NotFound,
    RateLimited,
    Run,
    RunEventMessage,
    RunsClient,
    Unauthenticated,
)
from agentstream.client.journal import JournalClient, RunBudget, RunRequest

__all__ = [
    "ApiError",
    "Conflict",
    "InvalidRequest",
    "JournalClient",
    "NotFound",
    "RateLimited",
    "Run",
    "RunBudget",
    "RunEventMessage",
    "RunRequest",
    "RunsClient",
    "Unauthenticated",
]
