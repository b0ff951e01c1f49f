"""Is a model's tool call executable? Invalid calls become error observations, never executions."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from agentstream.llm import ToolCall, ToolSpec


@lru_cache(maxsize=512)
def _validator(schema_json: str) -> Draft202012Validator | None:
    schema = orjson.loads(schema_json)
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError:
        return None
    return Draft202012Validator(schema)


def validate_call(call: ToolCall, tools: dict[str, ToolSpec]) -> str | None:
    """Returns the error observation for an invalid call, or None when the call may be requested."""
    spec = tools.get(call.name)
    if spec is None:
        known = ", ".join(sorted(tools)) or "none"
        return f"ERROR: unknown tool {call.name!r}; available tools: {known}"
    try:
        arguments: Any = orjson.loads(call.arguments_json or "{}")
    except orjson.JSONDecodeError as exc:
        return f"ERROR: arguments for {call.name!r} are not valid JSON ({exc}); send a JSON object"
    if not isinstance(arguments, dict):
        return f"ERROR: arguments for {call.name!r} must be a JSON object"
    validator = _validator(orjson.dumps(spec.input_schema, option=orjson.OPT_SORT_KEYS).decode())
    if validator is None:
        return f"ERROR: tool {call.name!r} has an invalid input schema; it cannot be called"
    errors = sorted(validator.iter_errors(arguments), key=lambda e: list(e.path))
    if errors:
        where = "/".join(str(p) for p in errors[0].path) or "(root)"
        return f"ERROR: invalid arguments for {call.name!r} at {where}: {errors[0].message}"
    return None
