"""The workflow registry: every version of every tenant's workflow, as the tools.catalog topic's
WorkflowRegistered records say (the ToolCatalog applies them here), and registration.

Registered like tools: a new definition of a name is its next version, an identical one is the
latest returned unchanged, old versions stay (a run pins the definition it started with, in its
RunStarted, so even a version compacted away would not change a running run).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from agentstream.config import Settings
from agentstream.events import Event, WorkflowRegistered
from agentstream.kafka.producer import AsyncProducer
from agentstream.kafka.table import put_record
from agentstream.topics import CATALOG, load_topics
from agentstream.workflows.definition import Workflow, parse_workflow
from agentstream.workflows.errors import WorkflowError

# A tenant's share of what every orchestrator and gateway holds in memory.
MAX_VERSIONS_PER_WORKFLOW = 50
MAX_WORKFLOWS_PER_TENANT = 200


def workflow_key(owner: str, name: str, version: str) -> str:
    return f"workflow/{owner}/{name}/{version}"


@dataclass
class WorkflowBook:
    versions: dict[tuple[str, str], dict[str, WorkflowRegistered]] = field(default_factory=dict)

    def apply(self, event: Event) -> None:
        if not isinstance(event, WorkflowRegistered):
            return
        known = self.versions.get((event.owner, event.name), {})
        if event.version not in known and self.cap(event.owner, event.name):
            return  # only a writer that skipped registration's checks gets here
        self.versions.setdefault((event.owner, event.name), {})[event.version] = event

    def cap(self, owner: str, name: str) -> str | None:
        """Why `owner` may not add a version of `name` (None: it may)."""
        if len(self.versions.get((owner, name), {})) >= MAX_VERSIONS_PER_WORKFLOW:
            return f"workflow {name!r} already has {MAX_VERSIONS_PER_WORKFLOW} versions, the most a workflow may have"
        if (owner, name) not in self.versions and len(self.names(owner)) >= MAX_WORKFLOWS_PER_TENANT:
            return f"tenant {owner} already has {MAX_WORKFLOWS_PER_TENANT} workflows, the most a tenant may have"
        return None

    def names(self, owner: str) -> list[str]:
        return sorted(name for (o, name) in self.versions if o == owner)

    def get(self, owner: str, name: str, version: str = "") -> WorkflowRegistered | None:
        """A version, or the latest with `version` empty."""
        versions = self.versions.get((owner, name))
        if not versions:
            return None
        if not version:
            return versions[max(versions, key=_order)]
        return versions.get(version)

    def version_list(self, owner: str, name: str) -> list[str]:
        return sorted(self.versions.get((owner, name), {}), key=_order)

    def definition_json(self, owner: str, name: str, version: str = "") -> str:
        """What a run of `name` pins: "" when the tenant has no such workflow (or version)."""
        found = self.get(owner, name, version)
        return found.definition_json if found is not None else ""


def _order(version: str) -> tuple[int, str]:
    return (int(version), version) if version.isdigit() else (-1, version)


def same_definition(a: Workflow, b: Workflow) -> bool:
    return a.model_copy(update={"version": ""}).to_json() == b.model_copy(update={"version": ""}).to_json()


async def register_workflow(
    settings: Settings, owner: str, raw: object, book: WorkflowBook, by: str, producer: AsyncProducer | None = None
) -> tuple[WorkflowRegistered, bool]:
    """Validates `raw` and registers it as `owner`'s next version of its name: (the version, True),
    or (the latest, False) when the latest is the same definition. Raises WorkflowError."""
    draft = parse_workflow(raw)
    latest = book.get(owner, draft.name)
    if latest is not None and same_definition(parse_workflow(latest.definition_json), draft):
        return latest, False
    refusal = book.cap(owner, draft.name)
    if refusal is not None:
        raise WorkflowError("invalid", refusal)
    version = str(int(latest.version) + 1) if latest is not None and latest.version.isdigit() else "1"
    pinned = draft.model_copy(update={"version": version}).to_json()
    event = WorkflowRegistered(workflow_key(owner, draft.name, version), owner, draft.name, version, pinned, by,
                               int(time.time() * 1000))  # fmt: skip
    await put_record(settings, load_topics(settings.topic_prefix)[CATALOG].name, event, producer)
    book.apply(event)
    return event, True


def describe(event: WorkflowRegistered) -> dict[str, Any]:
    """The API's view of a version: its definition as a document, not a string."""
    return {"name": event.name, "version": event.version, "registered_by": event.registered_by,
            "registered_ms": event.registered_ms, "definition": orjson.loads(event.definition_json)}  # fmt: skip
