"""Runs one round of a code-mode program, inside the sandbox. Standard library only: the tool
executor passes this file's source to `python -s -S -P -c` under agentstream.sandbox's bootstrap.

Reads one JSON request on stdin ({code, calls, functions, allowed, max_calls, max_output}) and
writes one JSON answer on stdout:
  {"status": "call", "index": i, "tool": t, "arguments": {...}}  the first call with no recorded result
  {"status": "done", "output": text}                             the program finished
  {"status": "error", "error": why, "output": text}              it failed (or was refused)
Calls with a recorded result return it (or raise ToolError) instead of running again, so a round
replays what earlier rounds did; a call that differs from the one recorded at its index is a
non-deterministic program.

The checks here (allowed imports, no dunder access, no open/eval/exec) give clear errors and keep
the program deterministic; the sandbox around the process (no network, hidden files, CPU, memory
and process limits) is what contains it.
"""

from __future__ import annotations

import ast
import builtins
import json
import sys
import types
from collections.abc import Callable
from typing import Any

MAX_ARGUMENT_CHARS = 64_000
FORBIDDEN_BUILTINS = (
    "open", "eval", "exec", "compile", "input", "breakpoint", "globals", "locals", "vars", "setattr",
    "delattr", "memoryview", "help", "exit", "quit", "__import__",
)  # fmt: skip


class ToolError(Exception):
    """A tool call failed or was denied; str(error) is its message."""


class Refused(Exception):
    """The program uses something run_code does not offer."""


class _Stop(BaseException):
    """Ends the round: a call to make, or a limit. Not an Exception, so `except Exception` in the
    program does not swallow it (and if the program catches it anyway, the answer stands)."""


class OutputLimit(_Stop):
    pass


def check(tree: ast.AST, allowed: frozenset[str]) -> None:
    """Refuses imports of other modules and access to dunder names and attributes."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                _check_module(alias.name, allowed, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level or not node.module:
                raise Refused(f"line {node.lineno}: relative imports are not allowed")
            _check_module(node.module, allowed, node.lineno)
        elif isinstance(node, ast.Attribute) and node.attr.startswith("__"):
            raise Refused(f"line {node.lineno}: access to {node.attr!r} is not allowed")
        elif isinstance(node, ast.Name) and node.id.startswith("__") and node.id != "__name__":
            raise Refused(f"line {node.lineno}: the name {node.id!r} is not allowed")


def _check_module(name: str, allowed: frozenset[str], line: int) -> None:
    if name.split(".")[0] not in allowed:
        raise Refused(f"line {line}: import of {name!r} is not allowed; allowed modules: {', '.join(sorted(allowed))}")


def _public(module: types.ModuleType) -> types.ModuleType:
    """What the program gets for an allowed module: its public names except the modules it
    imported (statistics.random, functools' sys), so no allowed module leads to another."""
    view = types.ModuleType(module.__name__)
    for name in dir(module):
        value = getattr(module, name)
        if not name.startswith("_") and not isinstance(value, types.ModuleType):
            setattr(view, name, value)
    return view


class Round:
    def __init__(self, request: dict[str, Any]) -> None:
        self.recorded: list[dict[str, Any]] = list(request.get("calls") or [])
        self.max_calls = int(request["max_calls"])
        self.max_output = int(request["max_output"])
        self.allowed = frozenset(request["allowed"])
        self.output: list[str] = []
        self.size = 0
        self.count = 0
        self.answer: dict[str, Any] | None = None

    def write(self, text: str) -> None:
        self.size += len(text)
        if self.size > self.max_output:
            self.answer = self.answer or _error(f"the program printed more than {self.max_output} characters", "")
            raise OutputLimit()
        self.output.append(text)

    def call(self, tool: str, arguments: dict[str, Any]) -> str:
        if self.answer is not None:
            raise _Stop()  # the round is over; a program that caught the stop is stopped again
        index = self.count
        self.count += 1
        if index >= self.max_calls:
            self.answer = _error(f"the program made more than {self.max_calls} tool calls (the limit per program)",
                                 "".join(self.output))  # fmt: skip
            raise _Stop()
        try:
            canonical = json.dumps(arguments, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"arguments of {tool} must be JSON values: {exc}") from None
        if len(canonical) > MAX_ARGUMENT_CHARS:
            raise ValueError(f"arguments of {tool} are {len(canonical)} characters; at most {MAX_ARGUMENT_CHARS}")
        if index < len(self.recorded):
            seen = self.recorded[index]
            if seen["tool"] != tool or json.dumps(seen["arguments"], sort_keys=True) != canonical:
                self.answer = _error(
                    f"non-deterministic program: call #{index} is now {tool}({canonical[:200]}) but was "
                    f"{seen['tool']}({json.dumps(seen['arguments'], sort_keys=True)[:200]}) when it ran",
                    "".join(self.output),
                )
                raise _Stop()
            if seen.get("is_error"):
                raise ToolError(str(seen.get("result", "")))
            return str(seen.get("result", ""))
        self.answer = {"status": "call", "index": index, "tool": tool, "arguments": arguments}
        raise _Stop()

    def function(self, py: str, tool: str, params: list[list[Any]]) -> Callable[..., str]:
        def call(*args: Any, **kwargs: Any) -> str:
            if len(args) > len(params):
                raise TypeError(f"{py}() takes at most {len(params)} positional argument(s)")
            bound = {param[1]: value for param, value in zip(params, args, strict=False)}
            by_py = {param[0]: param[1] for param in params}
            for key, value in kwargs.items():
                if key not in by_py:
                    raise TypeError(f"{py}() got an unexpected keyword argument {key!r}")
                if by_py[key] in bound:
                    raise TypeError(f"{py}() got multiple values for argument {key!r}")
                bound[by_py[key]] = value
            missing = [param[0] for param in params if param[2] and bound.get(param[1]) is None]
            if missing:
                raise TypeError(f"{py}() missing required argument(s): {', '.join(missing)}")
            return self.call(tool, {k: v for k, v in bound.items() if v is not None})

        call.__name__ = call.__qualname__ = py
        return call

    def namespace(self, functions: list[list[Any]]) -> dict[str, Any]:
        def printed(*values: Any, sep: str | None = " ", end: str | None = "\n", **_ignored: Any) -> None:
            self.write((" " if sep is None else sep).join(str(v) for v in values) + ("\n" if end is None else end))

        real_import = builtins.__import__

        def guarded_import(name: str, globs: Any = None, locs: Any = None, fromlist: Any = (), level: int = 0) -> Any:
            _check_module(name, self.allowed, 0)
            module = real_import(name, globs, locs, fromlist, level)
            return _public(sys.modules[name] if fromlist else module)

        def refuse(name: str) -> Callable[..., Any]:
            def refused(*_args: Any, **_kwargs: Any) -> Any:
                raise Refused(f"{name}() is not available in run_code programs")

            return refused

        def safe_getattr(obj: Any, name: str, *default: Any) -> Any:
            if isinstance(name, str) and name.startswith("_"):
                raise Refused(f"getattr of {name!r} is not allowed")
            return getattr(obj, name, *default)

        safe = {k: v for k, v in vars(builtins).items() if not k.startswith("_")}
        safe.update({name: refuse(name) for name in FORBIDDEN_BUILTINS}, print=printed, getattr=safe_getattr)
        safe["__import__"] = guarded_import
        names: dict[str, Any] = {"__builtins__": safe, "__name__": "__main__", "ToolError": ToolError}
        for py, tool, params in functions:
            names[py] = self.function(py, tool, params)
        return names


def _error(why: str, output: str) -> dict[str, Any]:
    return {"status": "error", "error": why, "output": output}


def _where(exc: BaseException) -> str:
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<program>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" (line {line})" if line is not None else ""


def run(request: dict[str, Any]) -> dict[str, Any]:
    state = Round(request)
    try:
        tree = ast.parse(str(request["code"]), "<program>")
        check(tree, state.allowed)
    except SyntaxError as exc:
        return _error(f"SyntaxError: {exc.msg} (line {exc.lineno})", "")
    except Refused as exc:
        return _error(f"refused: {exc}", "")
    names = state.namespace(list(request.get("functions") or []))
    last = tree.body[-1] if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    if last is not None:
        tree.body.pop()  # its value, if not None, ends the output
    try:
        exec(compile(tree, "<program>", "exec"), names)
        if last is not None:
            value = eval(compile(ast.Expression(last.value), "<program>", "eval"), names)
            if value is not None:
                state.write(value if isinstance(value, str) else repr(value))
    except _Stop:
        pass
    except RecursionError:
        state.answer = state.answer or _error("RecursionError: maximum recursion depth exceeded", "".join(state.output))
    except BaseException as exc:  # the program's own failure (ToolError included): an error answer
        kind = "refused" if isinstance(exc, Refused) else type(exc).__name__
        state.answer = state.answer or _error(f"{kind}: {exc}{_where(exc)}", "".join(state.output))
    return state.answer or {"status": "done", "output": "".join(state.output)}


def main() -> int:
    request = json.loads(sys.stdin.read())
    answer = run(request)
    sys.stdout.write(json.dumps(answer))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
