"""Deterministic multi-tool scenarios for the scripted model server, generated for benchmarks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TOPICS = ("kafka", "kraft", "avro", "mcp")


def chaos_scenario(index: int, steps: int) -> dict[str, Any]:
    """`steps` tool-using turns (a mix of pure, MCP and side-effecting tools), then an answer."""
    turns: list[dict[str, Any]] = []
    for step in range(steps):
        kind = (index + step) % 4
        calls: list[dict[str, Any]]
        if kind == 0:
            calls = [{"name": "calculator", "arguments": {"expression": f"{index + 1} * {step + 3} + 7"}}]
        elif kind == 1:
            calls = [
                {"name": "lookup", "arguments": {"topic": TOPICS[(index + step) % len(TOPICS)]}},
                {"name": "calculator", "arguments": {"expression": f"({step} + 1) ** 2"}},
            ]
        elif kind == 2:
            calls = [
                {
                    "name": "transfer_funds",
                    "arguments": {
                        "to_account": f"ACCT-{index:03d}",
                        "amount_cents": 100 + step,
                        "memo": f"step {step}",
                    },
                }
            ]
        else:
            calls = [
                {
                    "name": "convert_time",
                    "arguments": {
                        "source_timezone": "UTC",
                        "time": f"{(step + index) % 24:02d}:30",
                        "target_timezone": "Asia/Tokyo",
                    },
                }
            ]
        turns.append({"text": f"step {step}: working", "tool_calls": calls})
    turns.append({"text": f"Scenario {index} finished after {steps} tool steps."})
    return {"name": f"chaos{index}", "turns": turns}


def overhead_scenario(steps: int) -> dict[str, Any]:
    turns: list[dict[str, Any]] = [
        {"text": "", "tool_calls": [{"name": "calculator", "arguments": {"expression": f"{s} + 1"}}]}
        for s in range(steps)
    ]
    turns.append({"text": "done"})
    return {"name": "overhead", "turns": turns}


def write_scenarios(directory: Path, scenarios: list[dict[str, Any]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for scenario in scenarios:
        (directory / f"{scenario['name']}.json").write_text(json.dumps(scenario, indent=1))
