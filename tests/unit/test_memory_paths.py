"""Memory paths and commands (agentstream/memory/paths.py, commands.py): pure, no I/O."""

from __future__ import annotations

from typing import Any

import pytest

from agentstream.memory.commands import Command, insert_at, parse, replace_once, view_directory, view_file
from agentstream.memory.paths import MemoryRefused, check_path, parent_dirs, record_key, split_key


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("/memories", "/memories"),
        ("/memories/", "/memories"),
        ("/memories/notes.md", "/memories/notes.md"),
        ("/memories/projects/", "/memories/projects"),
        ("/memories/a b/ünïcode.txt", "/memories/a b/ünïcode.txt"),
        ("/memories/" + "/".join("abcdefgh"), "/memories/a/b/c/d/e/f/g/h"),  # 8 levels: the most
    ],
)
def test_valid_paths_have_one_spelling(given: str, canonical: str) -> None:
    assert check_path(given) == canonical


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("/memories/../etc/passwd", "'..'"),
        ("/memories/a/../../b", "'..'"),
        ("/memories/./a", "'..'"),
        ("/memories//a", "empty"),
        ("/etc/passwd", "outside /memories"),
        ("/memoriesX/a", "outside /memories"),
        ("memories/a", "outside /memories"),
        ("", "outside /memories"),
        ("/", "outside /memories"),
        ("/memories\\..\\x", "backslash"),
        ("/memories/a\x00b", "control character"),
        ("/memories/a\nb", "control character"),
        ("/memories/a\u202eb", "control character"),  # a bidi override hides what a name says
        ("/memories/a\ud800", "unpaired surrogate"),
        ("/memories/" + "x" * 250, "at most 256"),
        ("/memories/" + "/".join("abcdefghi"), "9 levels deep"),
        ("/memories/ a", "space"),
    ],
)
def test_bad_paths_are_refused_with_the_reason(given: str, reason: str) -> None:
    with pytest.raises(MemoryRefused, match=reason):
        check_path(given)


def test_non_string_path_and_keys() -> None:
    with pytest.raises(MemoryRefused, match="must be a string"):
        check_path(["/memories"])
    assert parent_dirs("/memories/a/b/c.md") == ["/memories/a/b", "/memories/a"]
    assert record_key("acme", "/memories/a.md") == "acme/memories/a.md"
    assert split_key("acme/memories/a.md") == ("acme", "/memories/a.md")
    assert split_key("nokey") is None


@pytest.mark.parametrize(
    ("tool", "arguments", "expected"),
    [
        ("memory", {"command": "view", "path": "/memories"}, Command("view", "/memories")),
        ("memory_view", {"command": "view", "path": "/memories/a", "view_range": [2, -1]},
         Command("view", "/memories/a", view_range=(2, -1))),
        ("memory", {"command": "create", "path": "/memories/a", "file_text": "x"}, Command("create", "/memories/a", text="x")),
        ("memory", {"command": "str_replace", "path": "/memories/a", "old_str": "o", "new_str": ""},
         Command("str_replace", "/memories/a", old_str="o")),
        ("memory", {"command": "insert", "path": "/memories/a", "insert_line": 0, "insert_text": "t"},
         Command("insert", "/memories/a", text="t")),
        ("memory", {"command": "delete", "path": "/memories/d/"}, Command("delete", "/memories/d")),
        ("memory", {"command": "rename", "old_path": "/memories/a", "new_path": "/memories/b/a"},
         Command("rename", "/memories/a", new_path="/memories/b/a")),
    ],
)  # fmt: skip
def test_commands_parse(tool: str, arguments: dict[str, Any], expected: Command) -> None:
    assert parse(tool, arguments) == expected


@pytest.mark.parametrize(
    ("tool", "arguments", "reason"),
    [
        ("memory_view", {"command": "create", "path": "/memories/a", "file_text": "x"}, "only reads"),
        ("memory", {"command": "format", "path": "/memories"}, "command must be one of"),
        ("memory", {"path": "/memories"}, "command must be one of"),
        ("memory", {"command": "create", "path": "/memories/a"}, "needs file_text"),
        ("memory", {"command": "view", "path": "/memories", "tenant": "globex"}, "unexpected argument"),
        ("memory", {"command": "create", "path": "/memories", "file_text": "x"}, "root directory"),
        ("memory", {"command": "create", "path": "/memories/a", "file_text": 3}, "must be a string"),
        ("memory", {"command": "create", "path": "/memories/a", "file_text": "a\x00"}, "NUL"),
        ("memory", {"command": "str_replace", "path": "/memories/a", "old_str": "", "new_str": "x"}, "not be empty"),
        ("memory", {"command": "insert", "path": "/memories/a", "insert_line": -1, "insert_text": "x"}, ">= 0"),
        ("memory", {"command": "insert", "path": "/memories/a", "insert_line": True, "insert_text": "x"}, ">= 0"),
        ("memory", {"command": "view", "path": "/memories/a", "view_range": [0, 3]}, "view_range"),
        ("memory", {"command": "view", "path": "/memories/a", "view_range": [5, 3]}, "view_range"),
        ("memory", {"command": "rename", "old_path": "/memories", "new_path": "/memories/x"}, "cannot be renamed"),
        ("memory", {"command": "rename", "old_path": "/memories/a", "new_path": "/memories/a/b"}, "inside it"),
        ("memory", {"command": "rename", "old_path": "/memories/a", "new_path": "/tmp/a"}, "new_path"),
        ("memory", {"command": "delete", "path": "/memories/../../x"}, "'..'"),
    ],
)
def test_bad_commands_are_refused(tool: str, arguments: dict[str, Any], reason: str) -> None:
    with pytest.raises(MemoryRefused, match=reason):
        parse(tool, arguments)


def test_replace_exactly_one_occurrence() -> None:
    assert replace_once("/memories/a", "one two", "two", "2") == "one 2"
    with pytest.raises(MemoryRefused, match="does not occur"):
        replace_once("/memories/a", "one", "two", "2")
    with pytest.raises(MemoryRefused, match="occurs 2 times"):
        replace_once("/memories/a", "x x", "x", "y")


def test_insert_after_a_line() -> None:
    assert insert_at("/m", "a\nb\n", 0, "top") == "top\na\nb\n"
    assert insert_at("/m", "a\nb\n", 1, "mid\n") == "a\nmid\nb\n"
    assert insert_at("/m", "a\nb", 2, "end") == "a\nb\nend\n"
    assert insert_at("/m", "", 0, "only") == "only\n"
    with pytest.raises(MemoryRefused, match="past the end"):
        insert_at("/m", "a\n", 2, "x")


def test_views() -> None:
    text = "alpha\nbeta\ngamma\n"
    assert view_file("/memories/a", text, None).splitlines()[1:] == ["     1\talpha", "     2\tbeta", "     3\tgamma"]
    assert view_file("/memories/a", text, (2, 2)).splitlines()[1:] == ["     2\tbeta"]
    with pytest.raises(MemoryRefused, match="has 3 lines"):
        view_file("/memories/a", text, (9, -1))
    long = "".join(f"line {i}\n" for i in range(20_000))
    cut = view_file("/memories/big", long, None)
    assert len(cut) < 61_000 and "ask for more with view_range=" in cut
    files = {"/memories/a.md": 3, "/memories/p/x.md": 5, "/memories/p/q/deep.md": 7, "/memories/pq": 1}
    listing = view_directory("/memories", files).splitlines()
    assert listing[1:] == ["3\t/memories/a.md", "12\t/memories/p/", "7\t/memories/p/q/", "5\t/memories/p/x.md",
                           "1\t/memories/pq"]  # fmt: skip
    assert view_directory("/memories/p", files).splitlines()[1:] == ["7\t/memories/p/q/", "7\t/memories/p/q/deep.md",
                                                                     "5\t/memories/p/x.md"]  # fmt: skip
    assert view_directory("/memories", {}).endswith("(empty)")
