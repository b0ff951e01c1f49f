"""Code-mode tool calling through the real stack (issue 19): one multi-tool task, done as a ReAct
loop (a model call per step) and as one run_code program, with the same scripted outcomes.

    .venv/bin/python bench/topologies_code.py

The task makes 11 tool calls over 5 tools (lookup, calculator, sleep_ms, transfer_funds,
convert_time): split an invoice, wait a cooling-off period, pay three shares, check the remainder,
note the cut-off in Tokyo time. The ReAct model batches independent calls in one step where it can.

  react_model_calls / code_model_calls      model calls of each run
  react_input_tokens / code_input_tokens    their prompt tokens (the code run's system prompt
                                            carries the generated function interface)
  same_effects                              both runs made the same tool calls (tool, arguments, in
                                            order) with the same results (transfer ids aside, which
                                            derive from each call's own idempotency key), and the
                                            bank holds the same transfers
  all_gated                                 every tool call of both runs (code-mode rounds too) was
                                            requested, authorized by the policy gate and journaled
                                            with its result
  tool_calls, tools, code_rounds            what the task exercised

The last line printed is one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentstream.client.journal import RunRequest
from agentstream.codemode.interface import RUN_CODE_TOOL
from agentstream.events import (
    LlmCallCompleted,
    RunCompleted,
    RunEvent,
    ToolCallAuthorized,
    ToolCallCompleted,
    ToolCallRequested,
)
from agentstream.processors.tool_executor.builtin import bank_transfers
from agentstream.stack import AUTO_APPROVE_DEMO, Deployment
from bench.common import bench_settings
from bench.scenarios import write_scenarios

TOOLS = ["calculator", "convert_time", "lookup", "sleep_ms", "transfer_funds"]
TIMEOUT_S = 180.0
PAYEES = ("ACC-100", "ACC-200", "ACC-300")


def _call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


def _pay(i: int) -> dict[str, Any]:
    return _call("transfer_funds", to_account=PAYEES[i], amount_cents=3125, memo=f"invoice 7 share {i + 1}")


# The ReAct model: one step per decision, independent calls side by side.
REACT_TURNS: list[dict[str, Any]] = [
    {"text": "First the policy note and the invoice total.",
     "tool_calls": [_call("lookup", topic="idempotency key"), _call("calculator", expression="4200 + 3800 + 4500")]},
    {"text": "The total is 12500. Each of four shares:", "tool_calls": [_call("calculator", expression="12500 / 4")]},
    {"text": "Cooling-off wait before paying.", "tool_calls": [_call("sleep_ms", ms=50)]},
    {"text": "Paying the first share.", "tool_calls": [_pay(0)]},
    {"text": "Paying the second share.", "tool_calls": [_pay(1)]},
    {"text": "Paying the third share.", "tool_calls": [_pay(2)]},
    {"text": "What remains, and the cut-off in Tokyo.",
     "tool_calls": [_call("calculator", expression="12500 - 3 * 3125"),
                    _call("convert_time", source_timezone="UTC", time="12:00", target_timezone="Asia/Tokyo")]},
    {"text": "One more note for the receipt.", "tool_calls": [_call("lookup", topic="exactly-once")]},
    {"text": "Paid three shares of 3125 cents; 3125 cents remain; the cut-off is 21:00 in Tokyo."},
]  # fmt: skip

PROGRAM = """
note = lookup("idempotency key")
total = calculator("4200 + 3800 + 4500")
share = calculator(f"{total} / 4")
sleep_ms(50)
receipts = []
for i, account in enumerate(["ACC-100", "ACC-200", "ACC-300"]):
    receipts.append(transfer_funds(to_account=account, amount_cents=int(float(share)), memo=f"invoice 7 share {i + 1}"))
remaining = calculator(f"{total} - 3 * {int(float(share))}")
cutoff = convert_time(source_timezone="UTC", time="12:00", target_timezone="Asia/Tokyo")
lookup("exactly-once")
print("share", share, "remaining", remaining)
print("\\n".join(receipts))
cutoff
"""

CODE_TURNS: list[dict[str, Any]] = [
    {"text": "I'll do the whole task in one program.", "tool_calls": [_call(RUN_CODE_TOOL, code=PROGRAM)]},
    {"text": "Paid three shares of 3125 cents; 3125 cents remain; the cut-off is 21:00 in Tokyo."},
]

_TRANSFER_ID = re.compile(r"txn_[0-9a-f]+")


async def _run(d: Deployment, scenario: str, tools: list[str]) -> list[RunEvent]:
    run_id = await d.client.request_run(
        RunRequest(task=f"[scenario:{scenario}] Pay invoice 7 in three shares.", tools=tools, max_steps=15)
    )
    events = [e.event async for e in d.client.follow(run_id, timeout_s=TIMEOUT_S)]
    if not events or not isinstance(events[-1], RunCompleted):
        raise RuntimeError(f"{scenario}: run {run_id} did not complete: {events[-1] if events else None!r}")
    return events


def _effects(events: list[RunEvent]) -> list[tuple[str, Any, str, bool]]:
    """The tool calls in the order they were made, with their results (rounds left out)."""
    results = {e.call_id: e for e in events if isinstance(e, ToolCallCompleted)}
    calls = sorted((e for e in events if isinstance(e, ToolCallRequested) and e.tool != RUN_CODE_TOOL),
                   key=lambda e: e.call_id)  # fmt: skip
    return [
        (c.tool, json.loads(c.arguments_json), _TRANSFER_ID.sub("txn_*", results[c.call_id].content),
         results[c.call_id].is_error)
        for c in calls
    ]  # fmt: skip


def _all_gated(events: list[RunEvent]) -> bool:
    authorized = {e.call_id for e in events if isinstance(e, ToolCallAuthorized)}
    completed = {e.call_id for e in events if isinstance(e, ToolCallCompleted)}
    requested = [e.call_id for e in events if isinstance(e, ToolCallRequested)]
    return bool(requested) and all(c in authorized and c in completed for c in requested)


def _model(events: list[RunEvent]) -> tuple[int, int]:
    calls = [e for e in events if isinstance(e, LlmCallCompleted)]
    return len(calls), sum(e.input_tokens for e in calls)


def _transfers(d: Deployment, run_id: str) -> list[tuple[str, int, str]]:
    rows = [t for t in bank_transfers(d.settings.bank_path) if t["idempotency_key"].startswith(run_id)]
    return sorted((t["to_account"], t["amount_cents"], t["memo"]) for t in rows)


async def measure_code_mode() -> dict[str, Any]:
    async with bench_settings("codemode") as (settings, _kafka):
        scen_dir = settings.home / "scenarios"
        write_scenarios(scen_dir, [{"name": "bench_react", "turns": REACT_TURNS},
                                   {"name": "bench_code", "turns": CODE_TURNS}])  # fmt: skip
        # The tenant's policy approves payments: the calls are gated (irreversible, auto-approved
        # by rule), not held for a person the benchmark does not have.
        async with Deployment(settings, [scen_dir], policies=AUTO_APPROVE_DEMO,
                              wait_tools=(*TOOLS, RUN_CODE_TOOL)) as d:  # fmt: skip
            react = await _run(d, "bench_react", TOOLS)
            code = await _run(d, "bench_code", [*TOOLS, RUN_CODE_TOOL])
            same_bank = _transfers(d, react[0].run_id) == _transfers(d, code[0].run_id) != []
    react_effects, code_effects = _effects(react), _effects(code)
    react_calls, react_tokens = _model(react)
    code_calls, code_tokens = _model(code)
    return {
        "react_model_calls": react_calls,
        "code_model_calls": code_calls,
        "react_input_tokens": react_tokens,
        "code_input_tokens": code_tokens,
        "same_effects": react_effects == code_effects and same_bank and not any(e[3] for e in react_effects),
        "all_gated": _all_gated(react) and _all_gated(code),
        "tool_calls": len(code_effects),
        "tools": len({e[0] for e in code_effects}),
        "code_rounds": sum(1 for e in code if isinstance(e, ToolCallRequested) and e.tool == RUN_CODE_TOOL),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(measure_code_mode())))
