"""Request bodies, validated strictly: unknown fields and out-of-range values are refused by name.

The gateway validates with these, the SDK and the CLI build their requests with them, and the
OpenAPI document is generated from them (agentstream.contract.openapi)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import httpx
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from agentstream.contract.vocab import ApprovalDecision

# Shared by the handlers and the OpenAPI document, so the document says exactly what is accepted.
# (JSON Schema `pattern` and `re.fullmatch` agree on these: no `$`-before-newline ambiguity.)
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,200}$"
# A list cursor: `<created_ms>.<run id, hex of its UTF-8>`. Opaque to clients, but every string of
# this shape names a position, so any such cursor is accepted.
CURSOR_PATTERN = r"^[0-9]{1,15}\.(?:[0-9a-f]{2}){1,400}$"
IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
CURSOR = re.compile(CURSOR_PATTERN)

ToolName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$")]
LabelKey = Annotated[str, Field(min_length=1, max_length=100)]


def _integral(value: object) -> object:
    # JSON has one number type: 20.0 is an integer by the document's JSON Schema, so it is accepted
    # as 20; 20.5, "20" and true are still refused by the strict integer check.
    return int(value) if isinstance(value, float) and value.is_integer() else value


Integer = Annotated[int, BeforeValidator(_integral)]


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    usd: float = Field(default=0.0, ge=0, le=1_000_000, description="Dollar cap for the run; 0: none.")
    tokens: Integer = Field(
        default=0, ge=0, le=10_000_000_000, description="Model token cap (input + output); 0: none."
    )
    wall_s: float = Field(
        default=0.0, ge=0, le=2_592_000, description="Wall-clock cap in seconds from the first call; 0: none."
    )
    on_loop: Literal["halt", "warn"] = Field(default="halt", description="What a detected loop does to the run.")


class CreateRun(BaseModel):
    # strict: "5", 5.5 or true for max_steps are refused, not coerced (the document says integer)
    model_config = ConfigDict(extra="forbid", strict=True)

    task: str = Field(min_length=1, max_length=100_000, description="What the agent should do.")
    model: str = Field(default="scripted", min_length=1, max_length=200)
    tools: list[ToolName] = Field(default_factory=list, max_length=100, description="Allowed tools; empty: all.")
    max_steps: Integer = Field(
        default=20, ge=1, le=100, description="Model calls before the run halts (resumable with more steps)."
    )
    labels: dict[LabelKey, Annotated[str, Field(max_length=500)]] = Field(default_factory=dict, max_length=50)
    budget: Budget | None = Field(default=None, description="Hard caps, enforced before every model and tool call.")


class CancelRun(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    reason: str = Field(default="cancelled by the client", min_length=1, max_length=1000)


class AuditQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    sql: str = Field(
        min_length=1, max_length=20_000,
        description="One read-only SQL statement (DuckDB dialect) over the audit tables and views: "
        "events, runs, model_calls, tool_calls, approvals, costs. It sees the calling tenant's rows only.",
    )  # fmt: skip
    max_rows: Integer = Field(default=1000, ge=1, le=10_000, description="Rows returned at most; more set `truncated`.")


class ResumeRun(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    add_steps: Integer = Field(default=10, ge=0, le=100, description="Model calls added to the run's step cap.")
    add_usd: float = Field(default=0.0, ge=0, le=1_000_000, description="Dollars added to the run's dollar cap.")
    add_tokens: Integer = Field(default=0, ge=0, le=10_000_000_000, description="Tokens added to the run's token cap.")
    add_wall_s: float = Field(default=0.0, ge=0, le=2_592_000, description="Seconds added to the wall-clock cap.")
    reason: str = Field(default="resumed by the client", min_length=1, max_length=1000)


class DecideApproval(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    # Not strict: JSON gives the decision as a string, which names the enum member.
    decision: ApprovalDecision = Field(
        strict=False, description="approve runs the call; deny returns an error observation."
    )
    decided_by: str = Field(
        default="", max_length=200,
        description="A free-text name, recorded only as a note in the decision's reason: the decider on record is "
        "the authenticated API key (`api:<tenant>:key/<key id>`), whatever this says.",
    )  # fmt: skip
    reason: str = Field(default="", max_length=1000)


# host[:port], `*.domain` allowed: what the sandbox's allowlist parses (agentstream.sandbox.policy).
_HOST = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*"
_PORT = r"(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
EGRESS_ENTRY_PATTERN = rf"^(\*\.)?{_HOST}{_PORT}$"
# A remote server's URL names its host the way an allowlist entry does (a DNS name, no literal
# IPv6, no user info; a path of printable ASCII, which an HTTP client sends as is), so the document
# says what registration accepts.
REMOTE_URL_PATTERN = rf"^https?://{_HOST}{_PORT}(/[!-~]*)?$"


def _one_of_command_or_url(schema: dict[str, Any]) -> None:
    # As the validator says: exactly one of the two, and neither may be null.
    properties = schema["properties"]
    for name in ("command", "url"):
        properties[name] = next(v for v in properties[name]["anyOf"] if v.get("type") != "null")
    schema["oneOf"] = [{"required": ["command"]}, {"required": ["url"]}]
    # A remote server's host must be on the allowlist, so a URL needs one.
    schema["dependentSchemas"] = {"url": {"required": ["egress"], "properties": {"egress": {"minItems": 1}}}}


class RegisterTool(BaseModel):
    """A tenant-owned tool: an MCP stdio server the executor runs in its sandbox (`command`), or a
    remote MCP server over streamable HTTP (`url`, whose host must be in `egress`)."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=_one_of_command_or_url)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str = Field(default="", max_length=2000)
    input_schema: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object"},
        description="JSON Schema of the arguments: an object.",
        json_schema_extra={"properties": {"type": {"const": "object"}}},
    )
    tier: Literal["read_only", "reversible", "irreversible"]
    command: list[Annotated[str, Field(min_length=1, max_length=500)]] | None = Field(
        default=None, min_length=1, max_length=50
    )
    url: str | None = Field(default=None, min_length=8, max_length=2000, pattern=REMOTE_URL_PATTERN)
    scopes: list[ToolName] = Field(default_factory=list, max_length=50)
    egress: list[Annotated[str, Field(pattern=EGRESS_ENTRY_PATTERN, max_length=255)]] = Field(
        default_factory=list, max_length=50
    )
    secrets: list[ToolName] = Field(default_factory=list, max_length=20)
    timeout_s: float = Field(default=30.0, ge=0.1, le=3600)
    approval_timeout_s: float | None = Field(
        default=None, ge=1, le=604_800,
        description="Seconds a person has to decide on a call that needs approval, before it is denied; "
        "capped by the tenant's policy (`approval_timeout_s`). Omitted or null: the tenant's policy alone.",
    )  # fmt: skip

    @model_validator(mode="after")
    def _one_place(self) -> RegisterTool:
        given = [name for name in ("command", "url") if name in self.model_fields_set]
        if len(given) != 1 or getattr(self, given[0]) is None:
            raise ValueError("give exactly one of command (an MCP stdio server) and url (a remote MCP server)")
        if self.url is not None and not self.egress:
            raise ValueError("a remote tool's egress allowlist must name its server's host")
        if self.url is not None:
            try:
                host = httpx.URL(self.url).host
            except httpx.InvalidURL as exc:
                raise ValueError(f"url is not a URL this platform can call ({exc})") from None
            if not host:
                raise ValueError("url must name a host")
        if self.input_schema.get("type", "object") != "object":
            raise ValueError("input_schema must describe a JSON object")
        return self


class SwitchTool(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    reason: str = Field(default="switched through the API", min_length=1, max_length=1000)
