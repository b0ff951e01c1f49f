"""Request bodies, validated strictly: unknown fields and out-of-range values are refused by name.

The gateway validates with these, the SDK and the CLI build their requests with them, and the
OpenAPI document is generated from them (agentstream.contract.openapi)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import httpx
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from agentstream.context.settings import (
    MAX_EXCLUDED_TOOLS,
    MAX_KEEP_TURNS,
    MAX_TRIGGER_TOKENS,
    MIN_TRIGGER_TOKENS,
    ContextSettingsError,
    parse_settings,
)
from agentstream.contract.vocab import ApprovalDecision

# Shared by the handlers and the OpenAPI document, so the document says exactly what is accepted.
# (JSON Schema `pattern` and `re.fullmatch` agree on these: no `$`-before-newline ambiguity.)
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,200}$"
# A list cursor: `<created_ms>.<run id, hex of its UTF-8>`. Opaque to clients, but every string of
# this shape names a position, so any such cursor is accepted.
CURSOR_PATTERN = r"^[0-9]{1,15}\.(?:[0-9a-f]{2}){1,400}$"
IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
CURSOR = re.compile(CURSOR_PATTERN)

# A workflow's name and version, as a run names them (the registry validates what it registers).
WORKFLOW_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
WORKFLOW_VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$"
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


class ContextSettings(BaseModel):
    """A run's context settings: when its prompt is compacted and what compaction may touch. Only
    the fields given override the tenant's defaults (`agentstream tools policy --context`)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    mode: Literal["off", "on"] = Field(
        default="off", description="on: compact the prompt when it grows past trigger_tokens; off: send it whole."
    )
    trigger_tokens: Integer = Field(
        default=64_000, ge=MIN_TRIGGER_TOKENS, le=MAX_TRIGGER_TOKENS,
        description="Compaction starts when the prompt is estimated above this many tokens (characters / 4).",
    )  # fmt: skip
    keep_turns: Integer = Field(
        default=1, ge=0, le=MAX_KEEP_TURNS,
        description="The most recent assistant turns, with their tool results, kept as they are.",
    )  # fmt: skip
    summarize: bool = Field(
        default=True,
        description="Summarize the old turns with a model call when clearing old tool results is not enough; "
        "false: clearing only, never a summarization call.",
    )  # fmt: skip
    summary_tier: Literal["small", "frontier"] = Field(
        default="small", description="The routing tier of the summarization call."
    )
    exclude_tools: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=list, max_length=MAX_EXCLUDED_TOOLS, description="Tools whose results are never cleared."
    )

    def overrides(self) -> dict[str, Any]:
        """The fields given, as the run's `RunRequested.context_json` holds them: the rest are the tenant's."""
        return self.model_dump(exclude_unset=True)

    @model_validator(mode="after")
    def _as_the_orchestrator_reads_it(self) -> ContextSettings:
        # What is accepted here must be what the orchestrator accepts at the run's start (the same
        # parser): otherwise a 201 would be followed by a run failing with bad_request.
        try:
            parse_settings(self.overrides())
        except ContextSettingsError as exc:
            raise ValueError(str(exc)) from None
        return self


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
    context: ContextSettings | None = Field(
        default=None, description="Context management for this run, over the tenant's defaults; omitted: the defaults."
    )
    workflow: str | None = Field(
        default=None, pattern=WORKFLOW_NAME_PATTERN,
        description="A registered workflow (explicit graph) the run follows; omitted: a ReAct run.",
    )  # fmt: skip
    workflow_version: str | None = Field(
        default=None, pattern=WORKFLOW_VERSION_PATTERN,
        description="The workflow's version to pin; omitted: its latest version when the run starts.",
    )  # fmt: skip
    parent_run_id: None = Field(
        default=None, description="Never set by a client: child runs are started only by their parent run."
    )

    @field_validator("parent_run_id", mode="before")
    @classmethod
    def _no_parent(cls, value: object) -> None:
        if value is not None:
            raise ValueError(
                "a client cannot start a child run: child runs are started only by their parent run "
                "(its spawn_agent call or a workflow's subagent node)"
            )
        return None

    @model_validator(mode="after")
    def _version_of_a_workflow(self) -> CreateRun:
        if self.workflow_version is not None and self.workflow is None:
            raise ValueError("workflow_version needs workflow: the version of which workflow?")
        return self

    def fingerprint(self) -> dict[str, Any]:
        """The request as its Idempotency-Key's hash covers it: `context` as given (a default spelled
        out is still a different request, since the tenant's default may differ), and absent when
        omitted, so a request made before the field existed hashes as it did (`workflow` too)."""
        body = self.model_dump(exclude={"context", "workflow", "workflow_version", "parent_run_id"})
        if self.context is not None:
            body["context"] = self.context.overrides()
        for name in ("workflow", "workflow_version"):
            if getattr(self, name) is not None:
                body[name] = getattr(self, name)
        return body


class CancelRun(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    reason: str = Field(default="cancelled by the client", min_length=1, max_length=1000)


class AuditQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    sql: str = Field(
        min_length=1, max_length=20_000,
        description="One read-only SQL statement (DuckDB dialect) over the audit tables and views: "
        "events, runs, model_calls, tool_calls, approvals, costs, flags, compactions. It sees the calling tenant's "
        "rows only.",
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
