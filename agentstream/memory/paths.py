"""Memory paths: every file lives under `/memories`. A path is checked before anything else looks
at it, and there is exactly one spelling of each (no `.`/`..` segments, no doubled or trailing
slash but on the root), so no path can name something outside the tenant's memory, and the
index key `<tenant><path>` splits back unambiguously (the tenant alphabet has no `/`)."""

from __future__ import annotations

import unicodedata

MEMORY_TOOL = "memory"
MEMORY_VIEW_TOOL = "memory_view"
# Their results are the tenant's private data for the policy gate's taint tracking, whatever the
# tenant's `private_tools` say (agentstream.registry.entry.TenantPolicy.is_private).
MEMORY_TOOLS = frozenset({MEMORY_TOOL, MEMORY_VIEW_TOOL})

ROOT = "/memories"
MAX_PATH_CHARS = 256
MAX_DEPTH = 8  # segments below /memories


class MemoryRefused(Exception):
    """Why a memory command is refused; its message is what the model sees."""


def check_path(path: object, name: str = "path") -> str:
    """The canonical form of a memory path (`/memories` or `/memories/a/b.md`), or `MemoryRefused`."""
    if not isinstance(path, str):
        raise MemoryRefused(f"{name} must be a string such as '{ROOT}/notes.md', not {type(path).__name__}")
    if len(path) > MAX_PATH_CHARS:
        raise MemoryRefused(f"{name} is {len(path)} characters long; at most {MAX_PATH_CHARS}")
    if "\\" in path:
        raise MemoryRefused(f"{name} {path!r} contains a backslash; use '/' between segments")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in path):
        raise MemoryRefused(f"{name} {path!r} contains a control character or an unpaired surrogate")
    if path in (ROOT, ROOT + "/"):
        return ROOT
    if not path.startswith(ROOT + "/"):
        raise MemoryRefused(f"{name} {path!r} is outside {ROOT}: every memory path starts with '{ROOT}/'")
    segments = path[len(ROOT) + 1 :].split("/")
    if segments[-1] == "":  # a directory written with its trailing slash
        segments.pop()
    for segment in segments:
        if segment in ("", ".", ".."):
            raise MemoryRefused(f"{name} {path!r} has an empty, '.' or '..' segment; write the path plainly")
        if segment != segment.strip():
            raise MemoryRefused(f"{name} {path!r} has a segment starting or ending with a space")
    if len(segments) > MAX_DEPTH:
        raise MemoryRefused(f"{name} {path!r} is {len(segments)} levels deep; at most {MAX_DEPTH} below {ROOT}")
    return ROOT + "/" + "/".join(segments)


def parent_dirs(path: str) -> list[str]:
    """The directories above a file path, nearest first, down to (not including) the root."""
    dirs = []
    while (path := path.rsplit("/", 1)[0]) != ROOT:
        dirs.append(path)
    return dirs


def is_under(path: str, directory: str) -> bool:
    return directory == ROOT or path.startswith(directory + "/")


def record_key(tenant_id: str, path: str) -> str:
    """The `memory` topic's key of one file: `<tenant>/memories/...`."""
    return f"{tenant_id}{path}"


def split_key(key: str) -> tuple[str, str] | None:
    tenant, sep, rest = key.partition("/")
    return (tenant, "/" + rest) if sep and tenant else None
