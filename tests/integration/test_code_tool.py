"""`run_code` rounds run as real programs in the real sandbox (namespaces, rlimits, no network):
replay of recorded results, and bad programs each stopped with a clear error."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from agentstream.codemode.interface import ALLOWED_MODULES, MAX_CALLS, MAX_OUTPUT_CHARS
from agentstream.processors.tool_executor.code_tool import CodeTool
from agentstream.sandbox import namespaces_available

pytestmark = pytest.mark.skipif(not namespaces_available(), reason="needs the sandbox's namespaces")
FUNCTIONS = [["calculator", "calculator", [["expression", "expression", True]]],
             ["lookup", "lookup", [["topic", "topic", True]]]]  # fmt: skip


def recorded(*calls: tuple[str, dict[str, Any], str, bool]) -> list[dict[str, Any]]:
    return [{"tool": t, "arguments": a, "result": r, "is_error": e} for t, a, r, e in calls]


async def round_of(
    code: str, calls: list[dict[str, Any]] | None = None, tool: CodeTool | None = None
) -> dict[str, Any]:
    result = await (tool or CodeTool()).call({"code": code, "calls": calls or [], "functions": FUNCTIONS}, timeout_s=30)
    answer: dict[str, Any] = orjson.loads(result.content)
    assert result.is_error == (answer["status"] == "error")
    return answer


PROGRAM = """
import json
total = calculator(expression="1+1")
try:
    note = lookup("nowhere")
except ToolError as exc:
    note = f"no note: {exc}"
print("total", total)
json.dumps({"total": total, "note": note})
"""


async def test_rounds_replay_recorded_results_until_the_program_ends() -> None:
    first = await round_of(PROGRAM)
    assert first == {"status": "call", "index": 0, "tool": "calculator", "arguments": {"expression": "1+1"}}
    second = await round_of(PROGRAM, recorded(("calculator", {"expression": "1+1"}, "2", False)))
    assert second == {"status": "call", "index": 1, "tool": "lookup", "arguments": {"topic": "nowhere"}}
    done = await round_of(PROGRAM, recorded(("calculator", {"expression": "1+1"}, "2", False),
                                            ("lookup", {"topic": "nowhere"}, "unknown topic", True)))  # fmt: skip
    assert done == {"status": "done", "output": 'total 2\n{"total": "2", "note": "no note: unknown topic"}'}
    # A re-run that asks for another call than the one recorded at that index is refused.
    changed = await round_of("calculator('3+3')", recorded(("calculator", {"expression": "1+1"}, "2", False)))
    assert changed["status"] == "error" and changed["error"].startswith("non-deterministic program: call #0")


async def test_an_endless_loop_is_stopped_at_its_cpu_limit() -> None:
    answer = await round_of("while True:\n    pass", tool=CodeTool(cpu_seconds=1))
    assert answer["status"] == "error" and "more than 1s of CPU time" in answer["error"]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("import os", "import of 'os' is not allowed"),
        ("from subprocess import run", "import of 'subprocess' is not allowed"),
        ("import importlib", "import of 'importlib' is not allowed"),
        ("import time", "import of 'time' is not allowed"),
        ("__import__('os')", "the name '__import__' is not allowed"),
        ("().__class__.__base__.__subclasses__()", "access to '__subclasses__' is not allowed"),
        ("getattr(print, '__globals__')", "getattr of '__globals__' is not allowed"),
        ("open('/etc/passwd').read()", "open() is not available"),
        ("eval('1+1')", "eval() is not available"),
        ("import statistics\nstatistics.random.random()", "has no attribute 'random'"),
        ("def f(:\n  pass", "SyntaxError"),
    ],
)
async def test_what_a_program_may_not_use_is_a_clear_error(code: str, expected: str) -> None:
    answer = await round_of(code)
    assert answer["status"] == "error" and expected in answer["error"], answer


async def test_the_network_is_refused_by_the_import_check_and_by_the_sandbox() -> None:
    for code in ("import socket", "import urllib.request", "import http.client"):
        assert "is not allowed" in (await round_of(code))["error"]
    # With the import check out of the way, the sandbox itself has no network to reach.
    unguarded = CodeTool(allowed_modules=(*ALLOWED_MODULES, "socket"))
    answer = await round_of("import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=3)", tool=unguarded)
    assert answer["status"] == "error" and ("OSError" in answer["error"] or "unreachable" in answer["error"]), answer


async def test_huge_output_and_too_many_calls_are_bounded() -> None:
    answer = await round_of("print('x' * 10_000_000)")
    assert answer["status"] == "error" and f"more than {MAX_OUTPUT_CHARS} characters" in answer["error"]
    loop = "for i in range(1000):\n    calculator(str(i))"
    calls = recorded(*((("calculator", {"expression": str(i)}, str(i), False)) for i in range(MAX_CALLS)))
    answer = await round_of(loop, calls)
    assert answer["status"] == "error" and f"more than {MAX_CALLS} tool calls" in answer["error"]
    # A program that swallows the stop (a bare except) is still stopped.
    sneaky = "for i in range(1000):\n    try:\n        calculator(str(i))\n    except BaseException:\n        pass"
    assert (await round_of(sneaky, calls))["status"] == "error"


async def test_rounds_run_concurrently_in_separate_sandboxes() -> None:
    tool = CodeTool()
    # A main guard, as models write it, is fine; so are the printed values of each program.
    programs = [f"if __name__ == '__main__':\n    print({i})" for i in range(4)]
    answers = await asyncio.gather(*(round_of(p, tool=tool) for p in programs))
    assert [a["output"] for a in answers] == [f"{i}\n" for i in range(4)]
