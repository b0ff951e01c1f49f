"""`agentstream mine` against a real broker: runs journaled with loops and flags cluster by
signature, and the largest cluster exports to a case file that loads back event for event."""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson
import pytest

from agentstream.cli.mine import mine_command
from agentstream.client.journal import JournalClient
from agentstream.events import LoopDetected, RunCompleted, RunEvent, RunStarted, ToolCallRequested
from agentstream.mining.cases import load_cases
from agentstream.security.journal_trust import stand_in_writer
from tests.harness import isolated_settings


def run_events(run: str, *, loop: bool) -> list[RunEvent]:
    events: list[RunEvent] = [RunStarted(f"{run}/s", run, "acme", "m", "[]", 10, "")]
    events += [ToolCallRequested(f"{run}/t{i}", run, "acme", i, f"{run}/c{i}", "tc", "pay", "{}", "k", 1000)
               for i in range(3)]  # fmt: skip
    if loop:
        events.append(LoopDetected(f"{run}/loop", run, "acme", 2, "tool_call", "warn", "sig", 3, 5, "{}"))
    return [*events, RunCompleted(f"{run}/end", run, "acme", 3, "paid", "done")]


def args(**over: object) -> argparse.Namespace:
    return argparse.Namespace(**{"since": None, "tenant": "", "top": 10, "json": True, "export": None, "out": None,
                                 **over})  # fmt: skip


async def test_mine_clusters_journaled_runs_and_exports_the_largest(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, _ = await isolated_settings(kafka_bootstrap, tmp_path, "mine")
    client = JournalClient(settings)
    runs = {f"loop{i}": run_events(f"loop{i}", loop=True) for i in range(3)} | {"ok": run_events("ok", loop=False)}
    try:
        for events in runs.values():
            for event in events:
                await client.append(event, as_writer=stand_in_writer(event.type_name))
    finally:
        await client.aclose()

    assert await mine_command(settings, args()) == 0
    shown = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert shown["runs"] == 4 and shown["flagged"] == 3
    assert shown["clusters"][0]["signature"] == "loop:tool_call @ pay" and shown["clusters"][0]["runs"] == 3

    out = tmp_path / "cases.json"
    assert await mine_command(settings, args(export=1, out=out)) == 0
    cases = load_cases(out)
    assert sorted(c.run_id for c in cases) == ["loop0", "loop1", "loop2"]
    assert all(c.events == runs[c.run_id] for c in cases)
    assert await mine_command(settings, args(export=2, out=out)) == 2  # only one cluster
    assert await mine_command(settings, args(export=1)) == 2  # --export without --out
