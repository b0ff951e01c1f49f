"""Settings of long-term memory (agentstream/memory): the caps on a tenant's memory files."""

from __future__ import annotations

from agentstream.settings.base import ComponentSettings, variable


class MemorySettings(ComponentSettings):
    COMPONENT = "memory"

    max_file_bytes: int = variable(
        256 * 1024, "AGENTSTREAM_MEMORY_MAX_FILE_BYTES",
        "the largest memory file (UTF-8 bytes); a write that would make one larger is refused",
        ge=1, le=64 * 1024 * 1024,
    )  # fmt: skip
    max_tenant_bytes: int = variable(
        4 * 1024 * 1024, "AGENTSTREAM_MEMORY_MAX_TENANT_BYTES",
        "the most a tenant's memory files may hold together (UTF-8 bytes); a write past it is refused",
        ge=1, le=1024**3,
    )  # fmt: skip
    max_files: int = variable(
        1000, "AGENTSTREAM_MEMORY_MAX_FILES", "the most files a tenant's memory may hold", ge=1, le=1_000_000
    )
