"""`memory` and `memory_view`: the platform's long-term memory tools (agentstream.memory).

A tenant's files under /memories, read and written by path. The tenant is always the run's, from
the signed authorization (the registry host passes it), never an argument: no path names another
tenant's file, and the index and the blob store are asked only for the run's tenant. `memory`
(tier reversible) takes every command; `memory_view` (read_only) only `view`, so read-only or
read-write memory is ordinary tool policy (allow/deny, the run's tool list). Every refusal is an
error observation with its reason; nothing here crashes the executor.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from agentstream.llm import ToolSpec
from agentstream.memory.commands import Command, insert_at, parse, replace_once, view_directory, view_file
from agentstream.memory.files import MemoryFiles
from agentstream.memory.paths import MEMORY_TOOL, MEMORY_VIEW_TOOL, MemoryRefused, check_path, is_under
from agentstream.tooling import ToolDescriptor, ToolResult

TIMEOUT_S = 30.0
log = logging.getLogger(__name__)

_PATH = {"type": "string", "maxLength": 256, "description": "a path under /memories, e.g. /memories/notes.md"}


def descriptors() -> list[ToolDescriptor]:
    write_schema = {
        "type": "object",
        "properties": {
            "command": {"type": "string", "enum": ["view", "create", "str_replace", "insert", "delete", "rename"]},
            "path": _PATH,
            "view_range": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
            "file_text": {"type": "string"},
            "old_str": {"type": "string"},
            "new_str": {"type": "string"},
            "insert_line": {"type": "integer", "minimum": 0},
            "insert_text": {"type": "string"},
            "old_path": _PATH,
            "new_path": _PATH,
        },
        "required": ["command"],
        "additionalProperties": False,
    }
    view_schema = {
        "type": "object",
        "properties": {
            "command": {"type": "string", "enum": ["view"]},
            "path": _PATH,
            "view_range": write_schema["properties"]["view_range"],  # type: ignore[index]
        },
        "required": ["command", "path"],
        "additionalProperties": False,
    }
    write = (
        "Your long-term memory: files under /memories that persist across runs of this tenant. Check it "
        "before starting a task and record what you learn. Commands: view {path, view_range?} (a directory "
        "listing, or a file with line numbers), create {path, file_text} (creates or overwrites), "
        "str_replace {path, old_str, new_str} (old_str must occur exactly once), insert {path, insert_line, "
        "insert_text} (after that line; 0: at the top), delete {path}, rename {old_path, new_path}."
    )
    view = (
        "Read your long-term memory (files under /memories that persist across runs of this tenant): "
        "view {path, view_range?} lists a directory or shows a file with line numbers."
    )
    return [
        ToolDescriptor(ToolSpec(MEMORY_TOOL, write, write_schema), "builtin", "reversible", idempotent=False,
                       timeout_s=TIMEOUT_S),
        ToolDescriptor(ToolSpec(MEMORY_VIEW_TOOL, view, view_schema), "builtin", "read_only", idempotent=True,
                       timeout_s=TIMEOUT_S),
    ]  # fmt: skip


class MemoryTool:
    def __init__(self, files: MemoryFiles) -> None:
        self.files = files

    async def call(
        self, tool: str, arguments: dict[str, Any], *, tenant: str, run_id: str, timeout_s: float
    ) -> ToolResult:
        """Never raises except for cancellation: every failure is an error observation."""
        try:
            if not isinstance(arguments, dict):
                raise MemoryRefused("arguments must be an object")
            command = parse(tool, arguments)
            self.files.index.refresh()  # what other executor instances wrote, as far as fetched
            async with asyncio.timeout(timeout_s):
                if command.name == "view":
                    return ToolResult(await self._view(tenant, command))
                async with self.files.lock(tenant):
                    return ToolResult(await self._write(tenant, run_id, command))
        except MemoryRefused as exc:
            return ToolResult(f"{tool}: {exc}", is_error=True)
        except TimeoutError:
            return ToolResult(f"{tool}: the memory store did not answer within {timeout_s:g}s", is_error=True)
        except Exception as exc:  # a bug, or the index topic unwritable: an observation, not a crash
            log.exception("%s failed", tool)
            return ToolResult(f"{tool} failed: {type(exc).__name__}; nothing more is known", is_error=True)

    async def _view(self, tenant: str, command: Command) -> str:
        files = self.files.files(tenant)
        if command.path in files:
            return view_file(command.path, await self.files.read(tenant, command.path), command.view_range)
        if not self.files.is_directory(tenant, command.path):
            raise MemoryRefused(f"{command.path} does not exist (view /memories to list what does)")
        if command.view_range is not None:
            raise MemoryRefused(f"{command.path} is a directory; view_range applies to files")
        return view_directory(command.path, {p: f.size for p, f in files.items()})

    async def _write(self, tenant: str, run_id: str, command: Command) -> str:
        path, files = command.path, self.files
        match command.name:
            case "create":
                existed = path in files.files(tenant)
                await files.write(tenant, path, command.text, run_id)
                return f"File {'overwritten' if existed else 'created'} successfully at: {path}"
            case "str_replace":
                text = replace_once(path, await self._existing(tenant, path), command.old_str, command.text)
                await files.write(tenant, path, text, run_id)
                return f"The file {path} has been edited (one occurrence replaced)."
            case "insert":
                text = insert_at(path, await self._existing(tenant, path), command.line, command.text)
                await files.write(tenant, path, text, run_id)
                return f"The text has been inserted after line {command.line} of {path}."
            case "delete":
                doomed = [p for p in files.files(tenant) if p == path or is_under(p, path)]
                if not doomed:
                    raise MemoryRefused(f"{path} does not exist; nothing was deleted")
                await files.delete(tenant, doomed, run_id)
                return f"Deleted {path}" + (f" ({len(doomed)} files)" if doomed != [path] else "")
            case "rename":
                return await self._rename(tenant, run_id, path, command.new_path)
        raise MemoryRefused(f"unknown command {command.name}")

    async def _rename(self, tenant: str, run_id: str, old: str, new: str) -> str:
        files = self.files.files(tenant)
        if old in files:
            moves = {old: new}
        else:
            moves = {p: new + p[len(old) :] for p in files if is_under(p, old)}
            if not moves:
                raise MemoryRefused(f"{old} does not exist; nothing was renamed")
        for target in moves.values():
            check_path(target, "new_path")  # a moved file must still be a valid path (depth, length)
        if new in files or self.files.is_directory(tenant, new):
            raise MemoryRefused(f"{new} already exists; nothing was renamed (delete it first or pick another path)")
        await self.files.move(tenant, moves, run_id)
        return f"Renamed {old} to {new}"

    async def _existing(self, tenant: str, path: str) -> str:
        if path not in self.files.files(tenant):
            kind = "a directory" if self.files.is_directory(tenant, path) else "not a file"
            raise MemoryRefused(f"{path} is {kind}; create it first")
        return await self.files.read(tenant, path)

    async def aclose(self) -> None:
        await self.files.aclose()
