"""Performs one ToolCallRequested: the only code path that runs a tool."""

from __future__ import annotations

import time
from typing import Any

import orjson

from agentstream import ids
from agentstream.chaos import crash_point
from agentstream.events import RunEvent, ToolCallCompleted, ToolCallRequested
from agentstream.tooling import ToolHost, ToolResult

MAX_RESULT_CHARS = 64_000


class ToolExecutor:
    def __init__(self, host: ToolHost) -> None:
        self.host = host

    async def perform(self, request: ToolCallRequested) -> list[RunEvent]:
        started = time.perf_counter()
        result = await self._run(request)
        crash_point("tool_after_effect")  # the window idempotency keys exist to close
        content = result.content
        if len(content) > MAX_RESULT_CHARS:
            content = content[:MAX_RESULT_CHARS] + f"\n[truncated: {len(result.content)} characters in all]"
        return [
            ToolCallCompleted(
                event_id=ids.completed_event_id(request.call_id),
                run_id=request.run_id,
                tenant_id=request.tenant_id,
                step=request.step,
                call_id=request.call_id,
                tool=request.tool,
                idempotency_key=request.idempotency_key,
                content=content,
                is_error=result.is_error,
                duration_ms=(time.perf_counter() - started) * 1000.0,
            )
        ]

    async def _run(self, request: ToolCallRequested) -> ToolResult:
        try:
            arguments: Any = orjson.loads(request.arguments_json or "{}")
        except orjson.JSONDecodeError as exc:
            return ToolResult(f"ERROR: arguments are not valid JSON: {exc}", is_error=True)
        if not isinstance(arguments, dict):
            return ToolResult("ERROR: arguments must be a JSON object", is_error=True)
        return await self.host.call(
            request.tool, arguments, idempotency_key=request.idempotency_key, timeout_s=request.timeout_ms / 1000.0
        )
