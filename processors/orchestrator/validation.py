"""Is a model's tool call executable? Invalid calls become error observations, never executions.

The schema is the tool's tenant's; it is compiled and run by `schema_guard` (RE2 for its patterns,
bounded sizes and a step budget), so no schema can stall the orchestrator or the gate."""

from __future__ import annotations

from functools import lru_cache

import orjson

from agentstream.llm import ToolCall, ToolSpec
from agentstream.registry.schema_guard import SchemaRefused, argument_error, tool_validator


def validate_call(call: ToolCall, tools: dict[str, ToolSpec]) -> str | None:
    """Returns the error observation for an invalid call, or None when the call may be requested."""
    spec = tools.get(call.name)
    if spec is None:
        known = ", ".join(sorted(tools)) or "none"
        return f"ERROR: unknown tool {call.name!r}; available tools: {known}"
    try:
        schema_json = orjson.dumps(spec.input_schema, option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONEncodeError:
        schema_json = ""
    if len(schema_json) <= _MEMO_SCHEMA_CHARS and len(call.arguments_json) <= _MEMO_ARGUMENT_CHARS:
        return _remembered(schema_json, call.name, call.arguments_json)
    return _verdict(schema_json, call.name, call.arguments_json)


# Every call is validated at least twice (the orchestrator's evolve, then the gate) and again on
# every replay; the verdict is a pure function of these strings. Only small ones are remembered,
# so the memo stays within a few MiB however large a tenant's schemas and arguments are.
_MEMO_SCHEMA_CHARS = 4096
_MEMO_ARGUMENT_CHARS = 2048


def _verdict(schema_json: str, tool: str, arguments_json: str) -> str | None:
    validator = tool_validator(schema_json)
    if isinstance(validator, SchemaRefused):
        return f"ERROR: tool {tool!r} has an input schema this platform will not run ({validator}); it cannot be called"
    error = argument_error(validator, arguments_json, tool)
    return None if error is None else f"ERROR: {error}"


_remembered = lru_cache(maxsize=4096)(_verdict)
