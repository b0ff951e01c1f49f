"""The memory tools' commands, pure: arguments parsed into one command (unknown or missing
arguments refused with the reason), and the text edits and views the tool applies to a file's
text. Nothing here does I/O; `processors/tool_executor/memory_tool.py` reads and writes.

Arguments, as the model sends them (Anthropic's memory tool's shapes):
    {"command": "view", "path": "/memories", "view_range": [1, 20]}        view_range optional
    {"command": "create", "path": "/memories/a.md", "file_text": "..."}     creates or overwrites
    {"command": "str_replace", "path": ..., "old_str": ..., "new_str": ...} exactly one occurrence
    {"command": "insert", "path": ..., "insert_line": 0, "insert_text": ...} after line N (0: first)
    {"command": "delete", "path": ...}                                       a file or a directory
    {"command": "rename", "old_path": ..., "new_path": ...}                  a file or a directory
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentstream.memory.paths import MEMORY_TOOL, MEMORY_VIEW_TOOL, ROOT, MemoryRefused, check_path, is_under

# The arguments of each command, beside "command"; the first ones listed are required.
_ARGUMENTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "view": (("path",), ("view_range",)),
    "create": (("path", "file_text"), ()),
    "str_replace": (("path", "old_str", "new_str"), ()),
    "insert": (("path", "insert_line", "insert_text"), ()),
    "delete": (("path",), ()),
    "rename": (("old_path", "new_path"), ()),
}
WRITE_COMMANDS = frozenset(_ARGUMENTS) - {"view"}
# A view longer than this is cut (with a note to ask for a range): a result must fit the journal.
MAX_VIEW_CHARS = 60_000
_LISTING_DEPTH = 2


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    path: str  # the file or directory it acts on (rename: the old path)
    new_path: str = ""
    text: str = ""  # file_text, insert_text or new_str
    old_str: str = ""
    line: int = 0  # insert_line
    view_range: tuple[int, int] | None = None


def parse(tool: str, arguments: Mapping[str, Any]) -> Command:
    """The command `arguments` ask `tool` for; `MemoryRefused` saying what is wrong."""
    name = arguments.get("command")
    allowed = ("view",) if tool == MEMORY_VIEW_TOOL else tuple(_ARGUMENTS)
    if name in WRITE_COMMANDS and tool == MEMORY_VIEW_TOOL:
        raise MemoryRefused(f"{MEMORY_VIEW_TOOL} only reads (command 'view'); writing takes the {MEMORY_TOOL} tool")
    if not isinstance(name, str) or name not in allowed:
        raise MemoryRefused(f"command must be one of {', '.join(allowed)}, not {name!r}")
    required, optional = _ARGUMENTS[name]
    extra = sorted(set(map(str, arguments)) - {"command", *required, *optional})
    if extra:
        raise MemoryRefused(f"unexpected argument(s) for {name}: {', '.join(extra)}")
    missing = [a for a in required if a not in arguments]
    if missing:
        raise MemoryRefused(f"{name} needs {', '.join(missing)}")
    if name == "rename":
        old, new = check_path(arguments["old_path"], "old_path"), check_path(arguments["new_path"], "new_path")
        if ROOT in (old, new):
            raise MemoryRefused(f"{ROOT} itself cannot be renamed")
        if old == new or is_under(new, old):
            raise MemoryRefused(f"cannot rename {old} to {new}: the new path is the old one or inside it")
        return Command(name, old, new_path=new)
    path = check_path(arguments["path"])
    if name == "view":
        return Command(name, path, view_range=_view_range(arguments.get("view_range")))
    if path == ROOT and name != "view":
        raise MemoryRefused(f"{ROOT} is the memory's root directory; {name} needs a file path below it")
    if name == "create":
        return Command(name, path, text=_text(arguments, "file_text"))
    if name == "str_replace":
        old_str = _text(arguments, "old_str")
        if not old_str:
            raise MemoryRefused("old_str must not be empty")
        return Command(name, path, old_str=old_str, text=_text(arguments, "new_str"))
    if name == "insert":
        line = arguments["insert_line"]
        if isinstance(line, bool) or not isinstance(line, int) or line < 0:
            raise MemoryRefused(f"insert_line must be an integer >= 0 (0: before the first line), not {line!r}")
        return Command(name, path, text=_text(arguments, "insert_text"), line=line)
    return Command(name, path)


def _text(arguments: Mapping[str, Any], name: str) -> str:
    value = arguments[name]
    if not isinstance(value, str):
        raise MemoryRefused(f"{name} must be a string, not {type(value).__name__}")
    if "\x00" in value:
        raise MemoryRefused(f"{name} contains a NUL character; memory files hold text")
    return value


def _view_range(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    ok = isinstance(value, list) and len(value) == 2 and all(type(v) is int for v in value)
    if not ok or value[0] < 1 or not (value[1] == -1 or value[1] >= value[0]):
        raise MemoryRefused(
            f"view_range must be [first, last] line numbers from 1 (last -1: to the end), not {value!r}"
        )
    return value[0], value[1]


def replace_once(path: str, text: str, old: str, new: str) -> str:
    count = text.count(old)
    if count == 0:
        raise MemoryRefused(f"old_str does not occur in {path}; nothing was changed (view the file to see its text)")
    if count > 1:
        raise MemoryRefused(
            f"old_str occurs {count} times in {path}; nothing was changed: include more context so it occurs once"
        )
    return text.replace(old, new, 1)


def insert_at(path: str, text: str, line: int, insert: str) -> str:
    lines = text.splitlines(keepends=True)
    if line > len(lines):
        raise MemoryRefused(f"insert_line {line} is past the end of {path}, which has {len(lines)} lines")
    if lines and line == len(lines) and not lines[-1].endswith("\n"):
        lines[-1] += "\n"  # appending after a last line without its newline
    block = insert if insert.endswith("\n") or not insert else insert + "\n"
    return "".join([*lines[:line], block, *lines[line:]])


def view_file(path: str, text: str, view_range: tuple[int, int] | None) -> str:
    lines = text.splitlines()
    first, last = view_range or (1, -1)
    if view_range is not None and first > max(len(lines), 1):
        raise MemoryRefused(f"view_range starts at line {first}, but {path} has {len(lines)} lines")
    last = len(lines) if last == -1 else min(last, len(lines))
    body = "\n".join(f"{n:6d}\t{lines[n - 1]}" for n in range(first, last + 1))
    view = f"Here's the content of {path} with line numbers:\n{body}"
    if len(view) > MAX_VIEW_CHARS:
        shown = view[:MAX_VIEW_CHARS].count("\n")
        view = view[:MAX_VIEW_CHARS].rsplit("\n", 1)[0]
        view += f"\n[cut: {len(lines)} lines in all; ask for more with view_range=[{first + shown - 1}, -1]]"
    return view


def view_directory(path: str, files: Mapping[str, int]) -> str:
    """A directory listing up to two levels deep: each directory and file with its size in bytes."""
    shown: dict[str, int] = {}
    for file, size in files.items():
        if not is_under(file, path):
            continue
        rel = file[len(path) + 1 :].split("/")
        for depth in range(1, min(len(rel), _LISTING_DEPTH) + 1):
            entry = path + "/" + "/".join(rel[:depth])
            if depth < len(rel):
                shown[entry + "/"] = shown.get(entry + "/", 0) + size
            else:
                shown[entry] = size
    lines = [f"{size}\t{entry}" for entry, size in sorted(shown.items())]
    head = f"Here are the files and directories up to {_LISTING_DEPTH} levels deep in {path} (size in bytes):"
    listing = "\n".join([head, *lines]) if lines else f"{head}\n(empty)"
    return listing[:MAX_VIEW_CHARS]
