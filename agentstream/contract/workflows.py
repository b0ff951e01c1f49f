"""The workflows API's bodies: a definition to register (checked whole by agentstream.workflows,
whose typed refusal is the 422's `details.kind`) and the registered versions."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agentstream.contract.queries import Query
from agentstream.contract.resources import Resource


class RegisterWorkflow(BaseModel):
    """A workflow definition (docs/topologies.md): typed state, nodes and edges. Shape and graph are
    validated by the registry, which answers 422 `invalid_workflow` naming the rule broken."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="1-64 characters of A-Z a-z 0-9 _ . -")
    start: str = Field(description="the node the run enters first")
    nodes: list[dict[str, Any]] = Field(description="model, tool, subagent, approval, branch, parallel or join nodes")
    edges: list[dict[str, Any]] = Field(default_factory=list, description="{from, to, when?, max_iterations?}")
    state: dict[str, Any] = Field(default_factory=dict, description="declared state fields: {type, default}")


class WorkflowVersion(Resource):
    name: str
    version: str
    registered_by: str
    registered_ms: int
    definition: dict[str, Any] = Field(description="the definition as registered, its version included")


class WorkflowDetail(WorkflowVersion):
    versions: list[str] = Field(description="every version registered under this name, oldest first")


class WorkflowPage(Resource):
    data: list[WorkflowVersion] = Field(description="the latest version of each of the tenant's workflows")


class GetWorkflowQuery(Query):
    version: str = Field(default="", max_length=20, description="a registered version; empty: the latest")
