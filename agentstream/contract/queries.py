"""Query strings and headers: one model per operation's query, validated by the gateway (every
value arrives as a string, so these are lax where JSON bodies are strict) and documented as that
operation's parameters."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from agentstream.contract.vocab import ApprovalStatus, CostGroup, RunStatus

# Shared by the gateway and the OpenAPI document, so the document says exactly what is accepted.
# (JSON Schema `pattern` and `re.fullmatch` agree on these: no `$`-before-newline ambiguity.)
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,200}$"
# A list cursor: `<created_ms>.<run id, hex of its UTF-8>`. Opaque to clients, but every string of
# this shape names a position, so any such cursor is accepted.
CURSOR_PATTERN = r"^[0-9]{1,15}\.(?:[0-9a-f]{2}){1,400}$"
# An SSE resume point: an event id of the stream (a journal offset), or empty for the start.
LAST_EVENT_ID_PATTERN = r"^[0-9]{0,18}$"
IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
CURSOR = re.compile(CURSOR_PATTERN)
LAST_EVENT_ID = re.compile(LAST_EVENT_ID_PATTERN)
# The longest `wait` a gateway allows unless configured otherwise (GatewayConfig.max_wait_s).
DEFAULT_MAX_WAIT_S = 60.0


def _digits(value: object) -> object:
    # Lax integer parsing would take " 5", "5_0" or "1.0"; the document says integer, so only digits.
    if isinstance(value, str) and not re.fullmatch(r"[+-]?[0-9]{1,18}", value):
        raise ValueError("must be an integer")
    return value


QueryInt = Annotated[int, BeforeValidator(_digits)]


class Query(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class CreateRunQuery(Query):
    # Its maximum is the gateway's (GatewayConfig.max_wait_s): checked there, and written into the
    # document that gateway serves.
    wait: float = Field(default=0.0, ge=0, description="seconds to wait for the run to end")


class ListRunsQuery(Query):
    status: RunStatus | None = Field(default=None, description="only runs with this status")
    cursor: str | None = Field(
        default=None, pattern=CURSOR_PATTERN, description="opaque: the `next_cursor` of the previous page"
    )
    limit: QueryInt = Field(default=50, ge=1, le=500, description="runs per page")


class ListCostsQuery(Query):
    group_by: CostGroup = CostGroup.RUN
    since_ms: QueryInt = Field(
        default=0, ge=0, le=10**15, description="only runs created at or after this time (ms since the epoch)"
    )


class ListApprovalsQuery(Query):
    status: ApprovalStatus | None = Field(default=None, description="only approvals with this status")


def first_problem(exc: ValidationError) -> tuple[str, str]:
    """(where, what) of a validation error's first problem: `budget.usd`, `Input should be ...`.
    The gateway answers with it, and the SDK raises it for a request it refuses before sending."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    message = first["msg"].removeprefix("Value error, ")
    return where, message
