"""The index of every tenant's memory files: a projection of the compacted `memory` topic.

A file's record (MemoryFileSet) names the blob holding its content; the latest record of a key is
the file's state. The tool executor keeps the index whole in memory, rebuilt at start by reading
the topic to its end, and applies its own writes at once (`apply`), so a run reads what it just
wrote. Another executor instance sees the write when its next `poll()` fetches it (typically
milliseconds; a broker outage delays it).
"""

from __future__ import annotations

from dataclasses import dataclass

from agentstream.config import Settings
from agentstream.events import Event, MemoryFileSet
from agentstream.kafka.table import TopicTable
from agentstream.memory.paths import split_key
from agentstream.topics import load_topics

MEMORY_TOPIC = "memory"


def memory_topic(settings: Settings) -> str:
    return load_topics(settings.topic_prefix)[MEMORY_TOPIC].name


@dataclass(frozen=True, slots=True)
class MemoryFile:
    path: str
    blob: str  # the content's handle (blob:v1/<tenant>/memory/<sha256>/<size>)
    size: int
    version: int
    updated_ms: int


class MemoryIndex(TopicTable):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, [memory_topic(settings)])
        self._files: dict[str, dict[str, MemoryFile]] = {}
        # The version of deleted paths too, so a file created again continues its count.
        self._versions: dict[tuple[str, str], int] = {}

    def files(self, tenant_id: str) -> dict[str, MemoryFile]:
        """A copy of the tenant's files by path (only ever that tenant's)."""
        return dict(self._files.get(tenant_id, {}))

    def get(self, tenant_id: str, path: str) -> MemoryFile | None:
        return self._files.get(tenant_id, {}).get(path)

    def version(self, tenant_id: str, path: str) -> int:
        return self._versions.get((tenant_id, path), 0)

    def tenants(self) -> list[str]:
        return sorted(t for t, files in self._files.items() if files)

    def apply(self, event: MemoryFileSet) -> None:
        """Applies a record this process wrote (read-your-writes) or read; an older version than
        the one held (the same record read back later) changes nothing."""
        key = (event.tenant_id, event.path)
        if event.version < self._versions.get(key, 0):
            return
        self._versions[key] = event.version
        files = self._files.setdefault(event.tenant_id, {})
        if event.deleted:
            files.pop(event.path, None)
        else:
            files[event.path] = MemoryFile(event.path, event.blob, event.size, event.version, event.updated_ms)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, MemoryFileSet):
            self.apply(event)

    def _on_tombstone(self, record_key: str) -> None:
        parsed = split_key(record_key)
        if parsed is not None:
            self._files.get(parsed[0], {}).pop(parsed[1], None)
