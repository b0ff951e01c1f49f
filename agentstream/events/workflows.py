"""The workflow registry's record (tools.catalog topic, beside the tools): one per version."""

from __future__ import annotations

from dataclasses import dataclass

from agentstream.events.base import Event, _register

__all__ = ["WorkflowRegistered"]


@_register
@dataclass(frozen=True, slots=True)
class WorkflowRegistered(Event):
    event_id: str  # "workflow/<owner>/<name>/<version>": every version stays under compaction
    owner: str  # the tenant whose workflow it is
    name: str
    version: str
    definition_json: str  # the validated definition (agentstream.workflows.definition), version included
    registered_by: str
    registered_ms: int
