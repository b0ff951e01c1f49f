"""Query strings and headers: one model per operation's query, validated by the gateway (every
value arrives as a string, so these are lax where JSON bodies are strict) and documented as that
operation's parameters."""

from __future__ import annotations

import re
from typing import Annotated, Literal

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
# Either stream accepts either form of id: a plain offset (a position in the run's own partition)
# or a tree stream's, per journal partition the last offset sent there (`<partition>:<offset>`
# joined by `.`, partitions ascending; agentstream.gateway.tree_stream).
ANY_EVENT_ID_PATTERN = r"^(?:[0-9]{0,18}|[0-9]{1,5}:[0-9]{1,18}(?:\.[0-9]{1,5}:[0-9]{1,18}){0,1023})$"
IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
CURSOR = re.compile(CURSOR_PATTERN)
LAST_EVENT_ID = re.compile(LAST_EVENT_ID_PATTERN)
ANY_EVENT_ID = re.compile(ANY_EVENT_ID_PATTERN)
# A run id, tenant or tool name (or a prefix of one) in a query: printable ASCII, no spaces.
NAME_PATTERN = r"^[\x21-\x7e]{1,200}$"
# The longest `wait` a gateway allows unless configured otherwise (GatewayConfig.max_wait_s).
DEFAULT_MAX_WAIT_S = 60.0


def _digits(value: object) -> object:
    # Lax integer parsing would take " 5", "5_0" or "1.0"; the document says integer, so only digits.
    if isinstance(value, str) and not re.fullmatch(r"[+-]?[0-9]{1,18}", value):
        raise ValueError("must be an integer")
    return value


QueryInt = Annotated[int, BeforeValidator(_digits)]
# Ms since the epoch. The bounds come before the validator: so an optional one documents them too.
Instant = Annotated[int, Field(ge=0, le=10**15), BeforeValidator(_digits)]


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
    # The console's filters (agentstream.gateway.console_api): every run on record, not only those held.
    tool: str | None = Field(default=None, pattern=NAME_PATTERN, description="only runs given this tool")
    flagged: bool | None = Field(default=None, description="only runs with (true) or without (false) a flag")
    min_cost_usd: float | None = Field(default=None, ge=0, description="only runs that cost at least this")
    max_cost_usd: float | None = Field(default=None, ge=0, description="only runs that cost at most this")
    q: str | None = Field(default=None, pattern=NAME_PATTERN, description="only runs whose id starts with this")
    tenant: str | None = Field(
        default=None, pattern=NAME_PATTERN, description="the key's own tenant (another tenant's: an empty page)"
    )
    order: Literal["oldest", "newest"] = Field(default="oldest", description="by creation time")


class StreamRunEventsQuery(Query):
    tree: bool = Field(
        default=False,
        description="also stream every descendant run's events (each message's `run_id` says whose); "
        "event ids are then per-partition positions (`<partition>:<offset>.…`)",
    )
    truncate: QueryInt = Field(
        default=0, ge=0, le=10**7, description="cut every text field of an event longer than this many characters "
        "(the record then says `truncated` and `more_url`, where the event is whole); 0: send events whole",
    )  # fmt: skip


class GetRunEventQuery(Query):
    blob: bool = Field(default=False, description="also read an offloaded tool result whole (`blob_text`)")


class CostSeriesQuery(Query):
    by: Literal["tool", "model", "run", "tenant"] = Field(default="tool", description="one line per tool, model, "
                                                         "run or tenant (a key sees its own tenant only)")  # fmt: skip
    bucket: Literal["1m", "5m", "15m", "1h", "6h", "1d"] = Field(default="1h", description="a point's width")
    since_ms: Instant | None = Field(
        default=None, description="the start; default: a day ago (at most 5000 buckets before the end)"
    )
    until_ms: Instant | None = Field(default=None, description="the end (excluded); default: now")
    run_id: str | None = Field(default=None, pattern=NAME_PATTERN, description="only this run's calls")
    top: QueryInt = Field(default=10, ge=1, le=50, description="lines shown; the rest are summed as `(other)`")


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
