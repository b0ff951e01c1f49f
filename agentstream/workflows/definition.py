"""A workflow definition: typed state, nodes and edges, as registered (JSON) and as pinned by a run.

    {"name": "triage", "state": {"score": {"type": "number"}}, "start": "classify",
     "nodes": [{"id": "classify", "type": "model", "prompt": "Score: {task}", "output": "score"}, ...],
     "edges": [{"from": "classify", "to": "route"}, {"from": "route", "to": "escalate", "when": "score > 3"}, ...],
     "answer": "score {score}"}

The state always holds `task` (the run's task, a string). Templates (`prompt`, `task`, `reason`,
tool arguments, `answer`) substitute `{field}`; a tool argument that is exactly `"{field}"` takes
the field's value with its type. Validation (checks.py) runs whole at registration, and again
when a run pins the definition, so a run never follows a graph that would not register today.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from agentstream.subagents import SPAWN_AGENT
from agentstream.workflows.errors import WorkflowError

NODE_TYPES = ("model", "tool", "subagent", "approval", "branch", "parallel", "join")
FIELD_TYPES = ("string", "number", "integer", "boolean", "list", "object")
NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
NODE_ID = re.compile(r"[A-Za-z0-9_-]{1,40}")  # it is part of the node's call ids
TEMPLATE_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
MAX_NODES = 200
MAX_DEFINITION_BYTES = 256 * 1024
TASK_FIELD = "task"
APPROVAL_TOOL = "request_approval"
EXAMPLES = Path(__file__).resolve().parent / "examples"  # docs/topologies.md shows ticket_triage.json


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StateField(_Strict):
    type: Literal["string", "number", "integer", "boolean", "list", "object"] = "string"
    default: Any = None


class Node(_Strict):
    id: str
    type: str  # checked against NODE_TYPES by the checks, with a message naming them
    description: str = ""
    # model: one model call with `prompt` rendered over the state; its answer goes to `output`.
    prompt: str = ""
    # tool: one call of `tool` with `arguments` rendered over the state; its result goes to `output`.
    tool: str = ""
    arguments: dict[str, Any] = Field(default_factory=dict)
    # subagent: a ReAct loop as a child run with `task` (rendered), `tools`, and its own caps.
    task: str = ""
    tools: list[str] = Field(default_factory=list)
    max_steps: int = Field(default=10, ge=1, le=100)
    budget_usd: float = Field(default=0.0, ge=0.0)
    budget_tokens: int = Field(default=0, ge=0)
    # approval: a person's decision on `reason` (rendered); denied goes to `on_denied`, or fails the run.
    reason: str = ""
    on_denied: str | None = None
    # parallel: its outgoing edges are the branches, which meet at `join`.
    join: str | None = None
    output: str | None = None


class Edge(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    source: str = Field(alias="from")
    target: str = Field(alias="to")
    # Only on a branch node's edges, tried in order: the first true one is taken; one without
    # `when` is the default and must come last.
    when: str | None = None
    # A loop edge's bound: how many times one run may take it (past it, a branch tries its next edge).
    max_iterations: int | None = Field(default=None, ge=1, le=1000)


class Workflow(_Strict):
    name: str
    description: str = ""
    version: str = ""  # given by the registry
    state: dict[str, StateField] = Field(default_factory=dict)
    start: str
    nodes: list[Node]
    edges: list[Edge] = Field(default_factory=list)
    answer: str = ""  # the run's final answer, rendered; "": the state's values as JSON

    # Indexes built once per (frozen) definition: the fold reads them on every event.
    _nodes: dict[str, Node] = PrivateAttr(default_factory=dict)
    _out: dict[str, list[Edge]] = PrivateAttr(default_factory=dict)

    def model_post_init(self, __context: Any) -> None:
        self._nodes = {node.id: node for node in self.nodes}
        for edge in self.edges:
            self._out.setdefault(edge.source, []).append(edge)

    def node(self, node_id: str) -> Node:
        return self._nodes[node_id]

    def has(self, node_id: str) -> bool:
        return node_id in self._nodes

    def outgoing(self, node_id: str) -> list[Edge]:
        return self._out.get(node_id, [])

    def fields(self) -> dict[str, StateField]:
        return {TASK_FIELD: StateField(type="string"), **self.state}

    def tools(self) -> tuple[str, ...]:
        """Every tool the graph calls (the run pins them at start), sorted."""
        names: set[str] = set()
        for node in self.nodes:
            if node.type == "tool":
                names.add(node.tool)
            elif node.type == "approval":
                names.add(APPROVAL_TOOL)
            elif node.type == "subagent":
                names.update((*node.tools, SPAWN_AGENT))
        return tuple(sorted(names))

    def to_json(self) -> str:
        return orjson.dumps(self.model_dump(by_alias=True, exclude_defaults=True)).decode()


def template_fields(text: str) -> set[str]:
    return set(TEMPLATE_FIELD.findall(text))


def render(text: str, values: dict[str, Any]) -> str:
    def field(m: re.Match[str]) -> str:
        value = values.get(m.group(1))
        return value if isinstance(value, str) else orjson.dumps(value).decode()

    return TEMPLATE_FIELD.sub(field, text)


def render_value(value: Any, values: dict[str, Any]) -> Any:
    """A tool argument over the state: `"{field}"` alone is the field's value (typed)."""
    if isinstance(value, str):
        whole = TEMPLATE_FIELD.fullmatch(value)
        return values.get(whole.group(1)) if whole else render(value, values)
    if isinstance(value, dict):
        return {k: render_value(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, values) for v in value]
    return value


def parse_workflow(raw: Any) -> Workflow:
    """A definition from its JSON text or decoded document, validated whole: shape, then the
    graph checks. Raises WorkflowError (its `kind` says which rule)."""
    from agentstream.workflows.checks import check_workflow  # the checks import this module

    if isinstance(raw, (str, bytes)):
        if len(raw) > MAX_DEFINITION_BYTES:
            raise WorkflowError("invalid", f"definition is {len(raw)} bytes; at most {MAX_DEFINITION_BYTES}")
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise WorkflowError("invalid", f"definition is not JSON: {exc}") from None
    try:
        workflow = Workflow.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise WorkflowError("invalid", f"{where}: {first['msg']} ({exc.error_count()} error(s))") from None
    check_workflow(workflow)
    return workflow


@functools.lru_cache(maxsize=512)
def pinned(definition_json: str) -> Workflow:
    """A run's pinned definition, parsed once per process (the fold reads it on every event)."""
    return parse_workflow(definition_json)
