"""Is a model's tool call executable? Invalid calls become error observations, never executions.

The schema is the tool's tenant's; it is compiled and run by `schema_guard` (RE2 for its patterns,
bounded sizes and a step budget), so no schema can stall the orchestrator or the gate."""

from __future__ import annotations

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
    validator = tool_validator(schema_json)
    if isinstance(validator, SchemaRefused):
        return f"ERROR: tool {call.name!r} has an input schema this platform will not run ({validator}); it cannot be called"
    error = argument_error(validator, call.arguments_json, call.name)
    return None if error is None else f"ERROR: {error}"
