"""Code mode in the orchestrator: a model's run_code call becomes rounds of deterministic
re-execution. Pure, like decide and evolve.

Round n is a ToolCallRequested of run_code carrying the program and the results recorded so far;
the executor runs the program in the sandbox, replaying recorded results, and answers with the
first call that has none (or the program's end). That call is then requested as an ordinary tool
call (own call id and idempotency key, derived from the run_code call and the call's index), so it
passes the policy gate, the cost governor and the executor and is journaled; its result starts
round n+1. A crash anywhere re-decides from the journal: a round that ran again replays recorded
results, and a tool call keeps its id, so nothing runs twice. When the program ends, the
orchestrator journals its output as the ToolCallCompleted of the model's run_code call: the one
observation the model reads (rounds and nested calls are on the record, not in the conversation).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import orjson

from agentstream import ids
from agentstream.codemode.interface import MAX_CALLS, MAX_OUTPUT_CHARS, RUN_CODE_TOOL, function_table, functions
from agentstream.events import RunEvent, ToolCallCompleted, ToolCallRequested
from agentstream.llm import ToolCall, tools_from_json
from agentstream.processors.orchestrator.code_state import CodeCall, CodeRun
from agentstream.processors.orchestrator.state import PlannedCall, RunState, replace

# A round carries every recorded result; its arguments must stay under the gate's argument cap
# (schema_guard.MAX_ARGUMENT_BYTES, 512 KiB) and fit a journal record.
MAX_ROUND_CHARS = 400_000
_ROUND, _CALL = "/code-r", "/code-c"


def round_id(call_id: str, n: int) -> str:
    return f"{call_id}{_ROUND}{n:02d}"


def nested_id(call_id: str, index: int) -> str:
    return f"{call_id}{_CALL}{index:02d}"


def refusal(call: ToolCall) -> str | None:
    """A model's run_code call may carry only its program: the replay state is the platform's."""
    if call.name != RUN_CODE_TOOL:
        return None
    try:
        arguments = orjson.loads(call.arguments_json or "{}")
    except orjson.JSONDecodeError:
        return None  # the schema check reports it
    extra = sorted(set(arguments) - {"code"}) if isinstance(arguments, dict) else []
    return f"ERROR: {RUN_CODE_TOOL} takes only code; {', '.join(extra)} are set by the platform" if extra else None


@lru_cache(maxsize=64)
def _table(tools_json: str) -> list[list[Any]]:
    return function_table(functions(tools_from_json(tools_json)))


def _callable(tools_json: str) -> frozenset[str]:
    return frozenset(row[1] for row in _table(tools_json))


def _find(state: RunState, call_id: str) -> CodeRun | None:
    return next((r for r in state.code if r.call_id == call_id), None)


def _put(state: RunState, run: CodeRun) -> RunState:
    others = tuple(r for r in state.code if r.call_id != run.call_id)
    return replace(state, code=(*others, run))


# --- decide -------------------------------------------------------------------------------------


def requests(state: RunState, p: PlannedCall, tool_timeout_ms: int) -> list[RunEvent]:
    """What the program of planned call `p` needs next: a round, a tool call, its end, or nothing
    (something is in flight)."""
    run = _find(state, p.call_id) or CodeRun(p.call_id)
    if run.output is not None:
        return [_ended(state, p, run.output, run.failed)]
    if run.waiting or (run.calls and run.calls[-1].requested and run.calls[-1].result is None):
        return []
    if run.calls and run.calls[-1].result is None:
        index = len(run.calls) - 1
        wanted = run.calls[-1]
        return [_request(state, p, nested_id(p.call_id, index), f"{p.tool_call_id}#{index}", wanted.tool,
                         wanted.arguments_json, tool_timeout_ms)]  # fmt: skip
    recorded = [
        {"tool": c.tool, "arguments": orjson.loads(c.arguments_json), "result": c.result, "is_error": c.is_error}
        for c in run.calls
    ]
    code = orjson.loads(p.arguments_json).get("code", "")
    arguments = orjson.dumps({"code": code, "calls": recorded, "functions": _table(state.tools_json)}).decode()
    if len(arguments) > MAX_ROUND_CHARS:
        why = (f"ERROR: the program's tool results add up to more than {MAX_ROUND_CHARS} characters after "
               f"{len(run.calls)} calls; make fewer calls or ask for smaller results")  # fmt: skip
        return [_ended(state, p, why, True)]
    n = run.round + 1
    return [_request(state, p, round_id(p.call_id, n), f"{p.tool_call_id}@{n}", RUN_CODE_TOOL, arguments,
                     tool_timeout_ms)]  # fmt: skip


def _request(
    state: RunState, p: PlannedCall, call_id: str, tool_call_id: str, tool: str, arguments: str, timeout_ms: int
) -> ToolCallRequested:
    return ToolCallRequested(
        event_id=ids.requested_event_id(call_id), run_id=state.run_id, tenant_id=state.tenant_id, step=state.step,
        call_id=call_id, tool_call_id=tool_call_id, tool=tool, arguments_json=arguments, idempotency_key=call_id,
        timeout_ms=timeout_ms, tool_version=state.tool_versions.get(tool, ""),
    )  # fmt: skip


def _ended(state: RunState, p: PlannedCall, output: str, failed: bool) -> ToolCallCompleted:
    return ToolCallCompleted(
        event_id=ids.completed_event_id(p.call_id), run_id=state.run_id, tenant_id=state.tenant_id, step=state.step,
        call_id=p.call_id, tool=RUN_CODE_TOOL, idempotency_key=p.call_id, content=output, is_error=failed,
        duration_ms=0.0,
    )  # fmt: skip


# --- evolve -------------------------------------------------------------------------------------


def _owner(state: RunState, call_id: str, marker: str) -> tuple[PlannedCall, int] | None:
    """The pending run_code call whose round or nested call `call_id` is, and its number."""
    head, sep, number = call_id.rpartition(marker)
    if not sep or not number.isdigit():
        return None
    p = next((p for p in state.planned if p.call_id == head and p.tool == RUN_CODE_TOOL and p.result is None), None)
    return None if p is None else (p, int(number))


def requested(state: RunState, event: ToolCallRequested) -> RunState | None:
    """Folds the request of a round or a nested call; None if `event` is neither."""
    if (found := _owner(state, event.call_id, _ROUND)) is not None:
        p, n = found
        run = _find(state, p.call_id) or CodeRun(p.call_id)
        return state if n <= run.round else _put(state, replace(run, round=n, waiting=True))
    if (found := _owner(state, event.call_id, _CALL)) is not None:
        p, index = found
        program = _find(state, p.call_id)
        if program is None or index >= len(program.calls):
            return state
        calls = tuple(replace(c, requested=True) if i == index else c for i, c in enumerate(program.calls))
        return _put(state, replace(program, calls=calls))
    return None


def completed(state: RunState, event: ToolCallCompleted) -> tuple[RunState, bool]:
    """Folds a round's answer or a nested call's result (True: consumed). The end of a program,
    journaled as the run_code call's own result, drops its record and is left to the usual fold."""
    if any(r.call_id == event.call_id for r in state.code):
        return replace(state, code=tuple(r for r in state.code if r.call_id != event.call_id)), False
    if (found := _owner(state, event.call_id, _ROUND)) is not None:
        p, n = found
        run = _find(state, p.call_id)
        if run is None or not run.waiting or n != run.round:
            return state, True
        return _put(state, _answered(replace(run, waiting=False), event, _callable(state.tools_json))), True
    if (found := _owner(state, event.call_id, _CALL)) is not None:
        p, index = found
        run = _find(state, p.call_id)
        if run is None or index != len(run.calls) - 1 or run.calls[index].result is not None:
            return state, True
        done = replace(run.calls[index], result=event.content, is_error=event.is_error)
        return _put(state, replace(run, calls=(*run.calls[:index], done))), True
    return state, False


def _answered(run: CodeRun, event: ToolCallCompleted, exposed: frozenset[str]) -> CodeRun:
    try:
        answer = orjson.loads(event.content)
    except orjson.JSONDecodeError:
        answer = None
    if not isinstance(answer, dict):  # not the runner's: the gate refused the round, or the executor did
        return _end(run, f"ERROR: {RUN_CODE_TOOL}: {event.content}", True)
    status = answer.get("status")
    output = str(answer.get("output") or "")
    if status == "done":
        return _end(run, output or "(the program printed nothing)", False)
    if status == "call":
        tool, index, arguments = answer.get("tool"), answer.get("index"), answer.get("arguments")
        if index != len(run.calls) or not isinstance(arguments, dict):
            return _end(run, f"ERROR: {RUN_CODE_TOOL}: the round asked for an unexpected call #{index}", True)
        if len(run.calls) >= MAX_CALLS:
            return _end(run, f"ERROR: the program made more than {MAX_CALLS} tool calls (the limit per program)", True)
        if tool not in exposed:
            return _end(run, f"ERROR: {tool!r} is not a function this program may call", True)
        call = CodeCall(str(tool), orjson.dumps(arguments).decode())
        return replace(run, calls=(*run.calls, call))
    why = str(answer.get("error") or "the program failed")
    return _end(run, (output.rstrip("\n") + "\n" if output else "") + f"ERROR: {why}", True)


def _end(run: CodeRun, output: str, failed: bool) -> CodeRun:
    if len(output) > MAX_OUTPUT_CHARS + 1000:
        output = output[: MAX_OUTPUT_CHARS + 1000] + "\n[truncated]"
    return replace(run, output=output, failed=failed, waiting=False)


def refused_by_budget(state: RunState, call_id: str) -> RunState | None:
    """The cost governor refused a round or a nested call: asked for again, same id, on resume."""
    if (found := _owner(state, call_id, _ROUND)) is not None:
        run = _find(state, found[0].call_id)
        if run is None or not run.waiting or found[1] != run.round:
            return None
        return _put(state, replace(run, waiting=False, round=run.round - 1))
    if (found := _owner(state, call_id, _CALL)) is not None:
        run = _find(state, found[0].call_id)
        if run is None or found[1] != len(run.calls) - 1 or run.calls[-1].result is not None:
            return None
        return _put(state, replace(run, calls=(*run.calls[:-1], replace(run.calls[-1], requested=False))))
    return None
