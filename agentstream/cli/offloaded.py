"""`agentstream runs show --fetch-blobs`: a run's offloaded tool results read back in full from
the blob store (the operator's path; the journal holds only their previews and handles)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from agentstream.blobs import BlobError, BlobHandle
from agentstream.blobs.factory import open_blob_store
from agentstream.blobs.offload import read_text
from agentstream.client.journal import JournalEntry
from agentstream.config import Settings
from agentstream.events import ToolCallCompleted


@dataclass(slots=True)
class Offloaded:
    """Each offloaded result of a run, by handle: its text, or the error that reading it gave."""

    texts: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, dict[str, str]]:
        return {"texts": self.texts, "errors": self.errors}

    def print(self) -> int:
        for handle, text in self.texts.items():
            print(f"\n--- {handle} ---\n{text}")
        for handle, error in self.errors.items():
            print(f"{handle}: {error}", file=sys.stderr)
        return 1 if self.errors else 0


async def fetch_offloaded(settings: Settings, entries: list[JournalEntry]) -> Offloaded:
    """Read as the run's own tenant (the event's), so a handle naming another tenant is refused."""
    wanted = [e.event for e in entries if isinstance(e.event, ToolCallCompleted) and e.event.result_blob]
    found = Offloaded()
    if not wanted:
        return found
    try:
        store = open_blob_store(settings)
    except BlobError as exc:
        found.errors = {e.result_blob: f"{type(exc).__name__}: {exc}" for e in wanted}
        return found
    for event in wanted:
        try:
            found.texts[event.result_blob] = await read_text(
                store, event.tenant_id, BlobHandle.parse(event.result_blob)
            )
        except BlobError as exc:
            found.errors[event.result_blob] = f"{type(exc).__name__}: {exc}"
    return found
