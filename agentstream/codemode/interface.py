"""The interface a code-mode program sees: one Python function per pinned tool, generated from the
tool registry's JSON Schemas, and the system-prompt section that documents it.

Pure and deterministic (the orchestrator builds the prompt in `decide`, which replay re-runs): the
same specs give the same text. The functions' runtime form (`function_table`) travels with every
round to the sandbox, which builds the callables from it; the text is only for the model.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from agentstream.llm import ToolSpec

RUN_CODE_TOOL = "run_code"
# Platform tools a program may not call: run_code itself (no nesting), and tools that the
# orchestrator turns into something other than an executor call (a child run).
NOT_CALLABLE = frozenset({RUN_CODE_TOOL, "spawn_agent", "request_approval"})

MAX_CODE_CHARS = 20_000
MAX_CALLS = 50  # tool calls per program
MAX_OUTPUT_CHARS = 16_000  # printed output plus the final value: the one observation the model reads
CPU_SECONDS = 5  # per round (each round re-runs the program from the start)
WALL_SECONDS = 15.0
MEMORY_MB = 256
# Pure modules only: nothing that reaches the host (os, sys, io, socket, subprocess), changes the
# interpreter (importlib, builtins) or differs between re-executions (time, random, datetime, uuid,
# secrets): a round replays earlier results, so the program must take the same path every time.
ALLOWED_MODULES = (
    "collections", "decimal", "fractions", "functools", "itertools", "json", "math", "operator", "re",
    "statistics", "string", "textwrap",
)  # fmt: skip

_JSON_TYPES = {
    "string": "str",
    "integer": "int",
    "number": "float",
    "boolean": "bool",
    "object": "dict",
    "null": "None",
}
_NOT_IDENTIFIER = re.compile(r"\W")


@dataclass(frozen=True, slots=True)
class Param:
    name: str  # the argument's JSON name
    py: str  # its Python name (a keyword gets a trailing underscore)
    annotation: str
    required: bool
    note: str  # constraints and description, for the docstring


@dataclass(frozen=True, slots=True)
class Function:
    tool: str
    py: str
    params: tuple[Param, ...]
    description: str


def python_name(name: str) -> str:
    py = _NOT_IDENTIFIER.sub("_", name) or "_"
    if py[0].isdigit():
        py = "_" + py
    return py + "_" if keyword.iskeyword(py) or keyword.issoftkeyword(py) else py


def functions(specs: Iterable[ToolSpec]) -> tuple[Function, ...]:
    """The callable tools, in the order given; a name that collides with an earlier one after
    sanitizing is left out (the model can still call that tool directly)."""
    found: list[Function] = []
    taken = {"ToolError", "print"}
    for spec in specs:
        py = python_name(spec.name)
        if spec.name in NOT_CALLABLE or py in taken:
            continue
        taken.add(py)
        found.append(Function(spec.name, py, _params(spec.input_schema), spec.description.strip()))
    return tuple(found)


def _params(schema: dict[str, Any]) -> tuple[Param, ...]:
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict):
        return ()
    required = set(schema.get("required") or ())
    params = [
        Param(name, python_name(name), _annotation(prop), name in required, _note(prop))
        for name, prop in properties.items()
        if isinstance(name, str)
    ]
    # Python wants the required parameters first; within each group the schema's order stays.
    return tuple(sorted(params, key=lambda p: not p.required))


def _annotation(prop: Any) -> str:
    if not isinstance(prop, dict):
        return "Any"
    kind = prop.get("type")
    if isinstance(kind, list):
        names = [_annotation({**prop, "type": k}) for k in kind]
        return " | ".join(dict.fromkeys(names)) or "Any"
    if kind == "array":
        return f"list[{_annotation(prop.get('items'))}]" if isinstance(prop.get("items"), dict) else "list"
    return _JSON_TYPES.get(kind, "Any") if isinstance(kind, str) else "Any"


def _note(prop: Any) -> str:
    if not isinstance(prop, dict):
        return ""
    parts = [str(prop["description"]).strip()] if prop.get("description") else []
    bounds = [f"{k} {prop[k]}" for k in ("minimum", "maximum", "minLength", "maxLength") if k in prop]
    if "enum" in prop and isinstance(prop["enum"], list):
        bounds.append("one of " + ", ".join(repr(v) for v in prop["enum"][:20]))
    if "default" in prop:
        bounds.append(f"default {prop['default']!r}")
    if bounds:
        parts.append("(" + "; ".join(bounds) + ")")
    return " ".join(parts)


def python_interface(funcs: Sequence[Function]) -> str:
    """Python stubs of the functions (signature and docstring), as the model reads them."""
    blocks = ['class ToolError(Exception):\n    """A tool call failed or was denied; str(error) is its message."""']
    for f in funcs:
        args = [
            f"{p.py}: {p.annotation}" if p.required else f"{p.py}: {_optional(p.annotation)} = None" for p in f.params
        ]
        doc = [f.description or f"Call the {f.tool} tool."]
        documented = [p for p in f.params if p.note or p.py != p.name]
        if documented:
            doc.append("")
            doc += [f"{p.py}: {p.note or ''}".rstrip() + (f" (JSON name {p.name!r})" if p.py != p.name else "")
                    for p in documented]  # fmt: skip
        body = "\n".join(f"    {line}" if line else "" for line in doc).strip().replace('"""', "'''")
        blocks.append(f'def {f.py}({", ".join(args)}) -> str:\n    """{body}"""')
    return "\n\n".join(blocks)


def _optional(annotation: str) -> str:
    return annotation if annotation == "Any" or "None" in annotation.split(" | ") else f"{annotation} | None"


def function_table(funcs: Sequence[Function]) -> list[list[Any]]:
    """The runtime form sent with each round: [python name, tool, [[python param, JSON name,
    required], ...]]; the sandbox builds the callables from it."""
    return [[f.py, f.tool, [[p.py, p.name, p.required] for p in f.params]] for f in funcs]


def prompt(specs: Iterable[ToolSpec]) -> str:
    """The system-prompt section of a run that pinned run_code."""
    funcs = functions(specs)
    return (
        f"\n\nCode mode: instead of calling tools one at a time, you may call {RUN_CODE_TOOL} with "
        '{"code": "<Python 3 program>"}; the program calls your tools as the functions below, in one '
        "step. Each function returns the tool's result text (str); a call that fails or is denied raises "
        "ToolError(message). Arguments left as None are not sent. The result of "
        f"{RUN_CODE_TOOL} is what the program print()s, then the value of its last expression unless None "
        f"(at most {MAX_OUTPUT_CHARS} characters); an uncaught exception makes it an error. Limits: "
        f"{MAX_CALLS} tool calls, {CPU_SECONDS} s of CPU, {MEMORY_MB} MB, no files, no network; modules: "
        f"{', '.join(ALLOWED_MODULES)}. After each tool call the program is re-run from the start with "
        "earlier results replayed, so it must make the same calls in the same order every time."
        "\n\n```python\n" + python_interface(funcs) + "\n```"
    )
