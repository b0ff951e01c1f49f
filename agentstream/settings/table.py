"""The configuration table (docs/configuration.md), generated from the settings classes:
`agentstream config --markdown`. A unit test fails when the file and the classes drift apart."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

from annotated_types import Ge, Gt
from pydantic.fields import FieldInfo

from agentstream.settings import COMPONENTS, env_name

_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string", Path: "path"}
HEADER = """# Configuration

Every setting is an environment variable, read once when a process starts (`agentstream/settings/`:
one class per component, each variable typed, with its default and meaning). A value that does not
fit its type stops the process with an error naming the variable. This table is generated: after
changing a setting run `agentstream config --markdown > docs/configuration.md`.

| variable | type | default | description | component |
|---|---|---|---|---|
"""


def _bounds(metadata: list[Any]) -> str:
    for item in metadata:
        if isinstance(item, Gt):
            return f" > {item.gt}"
        if isinstance(item, Ge):
            return f" >= {item.ge}"
    return ""


def type_name(annotation: Any, metadata: list[Any] | None = None) -> str:
    """A reader's name for a setting's type: `number > 0`, ``one of `a`, `b` ``, `path`."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        inner, *extra = typing.get_args(annotation)
        return type_name(inner, list(extra))
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(annotation) if a is not type(None))
    if origin is Literal:
        return "one of " + ", ".join(f"`{v}`" for v in typing.get_args(annotation))
    if origin is dict:
        return "key=value list"
    if origin is tuple:
        return "comma-separated list of " + ("CIDRs" if "Network" in str(typing.get_args(annotation)[0]) else "values")
    return _NAMES.get(annotation, getattr(annotation, "__name__", str(annotation))) + _bounds(metadata or [])


def _default(info: FieldInfo) -> str:
    extra = info.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("shown_default"), str):
        return str(extra["shown_default"])
    value = info.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value in ("", {}, ()):
        return "empty"
    return f"`{value}`"


def rows() -> list[tuple[str, str, str, str, str]]:
    """(variable, type, default, description, component) for every setting."""
    out = []
    for cls in COMPONENTS:
        for field, info in cls.model_fields.items():
            out.append((env_name(cls, field), type_name(info.annotation, list(info.metadata)), _default(info),
                        info.description or "", cls.COMPONENT))  # fmt: skip
    return out


def markdown() -> str:
    """docs/configuration.md, whole."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [f"| `{v}` | {cell(t)} | {cell(d)} | {cell(desc)} | {c} |" for v, t, d, desc, c in rows()]
    return HEADER + "\n".join(lines) + "\n"
