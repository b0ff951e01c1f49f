"""A run as the orchestrator sees it: a frozen value folded from the run's journal events."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeVar

from agentstream.llm import Message, ToolCall
from agentstream.processors.orchestrator.code_state import CodeRun
from agentstream.processors.orchestrator.graph.state import GraphProgress
from agentstream.processors.orchestrator.loops import DEFAULT_ON_REPEATED_DENIAL

Status = Literal["requested", "running", "halted", "completed", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled"})


@dataclass(frozen=True, slots=True)
class PlannedCall:
    """One tool call of the current step. `result` is set when its observation is known: from the
    executor, or at once for an invalid call, whose error observation never reaches a tool."""

    call_id: str
    tool_call_id: str
    tool: str
    arguments_json: str
    requested: bool = False
    result: str | None = None
    is_error: bool = False
    result_blob: str = ""  # the handle of a result offloaded to the blob store (result: its preview)
    # For loop detection, which counts only calls that ran: the call's signature and evidence,
    # whether it was invalid (never sent), whether the gate held it (a deny or a need for
    # approval) and, if so, the first approval decision ("approved" or "denied").
    signature: str = ""
    evidence: str = ""
    invalid: bool = False
    gated: bool = False
    approval: str = ""
    # A spawn_agent call whose child's budget the cost governor reserved: "usd tokens" (the child
    # is requested with exactly that); "" until then (processors/orchestrator/subagents.py).
    child_budget: str = ""

    @property
    def needs_request(self) -> bool:
        return not self.requested and self.result is None

    @property
    def denied(self) -> bool:
        """Refused by the gate or by a person (or nobody approved in time): it never ran."""
        return self.gated and self.approval != "approved"

    @property
    def ran(self) -> bool:
        return not self.invalid and not self.denied


@dataclass(frozen=True, slots=True)
class RunState:
    run_id: str
    tenant_id: str
    status: Status
    task: str
    model: str
    tool_names: tuple[str, ...]
    max_steps: int
    tools_json: str = "[]"
    tool_versions: dict[str, str] = field(default_factory=dict)
    step: int = 0
    messages: tuple[Message, ...] = ()
    llm_pending: str | None = None
    planned: tuple[PlannedCall, ...] = ()
    invalid_streak: int = 0
    halts: int = 0  # how many times the run has halted at a limit; names the next halt and resume
    final_answer: str | None = None
    llm_failure: str | None = None
    cancel_reason: str | None = None
    outcome_reason: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    # A halt decided but not yet journaled (the cost governor refused a call, or a loop halts it).
    halt_limit: str = ""
    halt_reason: str = ""
    # Loop detection: signatures of the last steps' model outputs and tool calls, oldest first.
    on_loop: str = "halt"
    recent: tuple[str, ...] = ()
    output_signature: str = ""  # the current step's model output, joining `recent` if a call of it runs
    # Repeated denials: their own window, and what the tenant's policy (pinned at start) has them do.
    on_repeated_denial: str = DEFAULT_ON_REPEATED_DENIAL
    denied_recent: tuple[str, ...] = ()
    loop_action: str = ""  # the pending notice's action when it is not `on_loop` (a repeated denial)
    loop_kind: str = ""  # a detected loop not yet journaled
    loop_signature: str = ""
    loop_count: int = 0
    loop_evidence: str = ""
    loops_reported: tuple[str, ...] = ()
    # Context management (agentstream/context): the settings as given on create, then as pinned at
    # start; the compactions so far; a summarization call in flight, its answer or its failure.
    context_json: str = ""
    task_blob: str = ""  # a task offloaded to the blob store: the handle the task message carries
    compactions: int = 0
    compacted_step: int = -1  # the step whose prompt was last compacted: once per step at most
    compact_pending: str | None = None
    compact_summary: str | None = None
    compact_failed: bool = False
    # The orchestrator version pinned in RunStarted: the run decides with its rules to the end,
    # whatever the process's default is now ("" until started, or pinned before versions: v1).
    orchestrator_version: str = ""
    # Step checks (agentstream.evaluation): the tenant's evaluation policy pinned at start; verdicts
    # decided but not yet journaled (JSON, oldest first) and how many the run has had; digests of
    # the calls and results seen (repetition); the tools that succeeded so far (procedures).
    eval_json: str = ""
    eval_pending: tuple[str, ...] = ()
    eval_count: int = 0
    eval_seen: tuple[str, ...] = ()
    eval_done: tuple[str, ...] = ()
    # An explicit graph (processors/orchestrator/graph): the workflow named on create, the
    # definition pinned at start (JSON) and where the run stands in it; None for a ReAct run.
    workflow: str = ""
    workflow_version: str = ""
    workflow_json: str = ""
    graph: GraphProgress | None = None
    # Code mode (codemode.py): the programs of this step's run_code calls still running.
    code: tuple[CodeRun, ...] = ()
    # A child run's place in its run tree (RunRequested v8) and its creator's API key (a child
    # inherits it); how many children this run has started (their steps left its max_steps).
    parent_run_id: str = ""
    parent_call_id: str = ""
    depth: int = 0
    api_key_id: str = ""
    children: int = 0

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @staticmethod
    def load(value: Any) -> RunState:
        if isinstance(value, RunState):
            return value
        d = dict(value)
        d["tool_names"] = tuple(d["tool_names"])
        d["messages"] = tuple(Message.from_dict(m) if isinstance(m, dict) else m for m in d["messages"])
        d["planned"] = tuple(PlannedCall(**p) if isinstance(p, dict) else p for p in d["planned"])
        d["recent"] = tuple(d.get("recent", ()))
        d["denied_recent"] = tuple(d.get("denied_recent", ()))
        d["loops_reported"] = tuple(d.get("loops_reported", ()))
        for name in ("eval_pending", "eval_seen", "eval_done"):
            d[name] = tuple(d.get(name, ()))
        d["code"] = tuple(map(CodeRun.load, d["code"])) if d.get("code") else ()
        if d.get("graph") is not None:
            d["graph"] = GraphProgress.load(d["graph"])
        return RunState(**d)


def assistant_message(text: str, calls: tuple[ToolCall, ...]) -> Message:
    return Message(role="assistant", content=text, tool_calls=calls)


_T = TypeVar("_T")
_FIELDS: dict[type, tuple[tuple[str, ...], frozenset[str]]] = {}


def replace(obj: _T, /, **changes: Any) -> _T:
    """`dataclasses.replace` for the run state's frozen, slotted dataclasses (none has a
    `__post_init__` or an `init=False` field), about three times faster: it copies the fields
    instead of calling `__init__`. The fold replaces the run's state several times per event, and
    the state has some fifty fields, so this is a measurable share of a step's CPU. An unknown
    field name is a TypeError, as with `dataclasses.replace`."""
    cls = type(obj)
    known = _FIELDS.get(cls)
    if known is None:
        names = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
        known = _FIELDS[cls] = (names, frozenset(names))
    if not known[1].issuperset(changes):
        raise TypeError(f"{cls.__name__} has no field(s) {sorted(set(changes) - known[1])}")
    new = object.__new__(cls)
    set_field = object.__setattr__
    for name in known[0]:
        set_field(new, name, getattr(obj, name))
    for name, value in changes.items():
        set_field(new, name, value)
    return new
