"""A broker outage, as an operator meets it: runs in flight, the broker SIGKILLed, started again
after a while. No processor may exit, every run must finish, no model call may be sent twice, and
the processors' logs must say what happened in a few lines, not one per reconnect attempt."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from agentstream.client.journal import RunRequest
from agentstream.config import ModelSettings, Settings
from agentstream.events import LlmCallCompleted, RunCompleted, ToolCallCompleted
from agentstream.localkafka import LocalKafka, free_port
from agentstream.stack import LAYOUT_ENV, Deployment, ensure_topics
from tests.harness import isolated_settings

# Kills and restarts brokers on a timing budget: run alone, after the parallel part (README).
pytestmark = pytest.mark.serial

SCENARIOS = {
    "steady": {"turns": [
        *[{"delay_ms": 300, "tool_calls": [{"name": "calculator", "arguments": {"expression": f"{i} + 1"}}]}
          for i in range(8)],
        {"text": "done"},
    ]},
}  # fmt: skip
RUNS = 8


@dataclass
class Outage:
    kafka: LocalKafka
    settings: Settings
    scenarios: Path


@pytest.fixture
async def outage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Outage]:
    """A broker of this test's own: the session's shared one must not be killed."""
    kafka = LocalKafka(tmp_path / "broker", port=free_port(), controller_port=free_port(),
                       credentials_dir=tmp_path / "keys")  # fmt: skip
    await kafka.start()
    try:
        monkeypatch.setenv("AGENTSTREAM_KAFKA_SASL_FILE", str(kafka.credentials.path("admin-cli")))
        monkeypatch.setenv("AGENTSTREAM_KAFKA_CREDENTIALS_DIR", str(kafka.credentials.directory))
        base, scenarios = await isolated_settings(kafka.bootstrap, tmp_path, "outage", SCENARIOS)
        settings = Settings(base.bootstrap_servers, base.topic_prefix, base.home, ModelSettings(),
                            kafka_extra=kafka.admin_config(), kafka_credentials_dir=kafka.credentials.directory)  # fmt: skip
        await ensure_topics(settings)
        yield Outage(kafka, settings, scenarios)
    finally:
        await kafka.stop()


def _log_lines(d: Deployment) -> dict[str, int]:
    assert d.procs is not None
    return {p.name: len(p.read_text(errors="replace").splitlines()) for p in d.procs.log_dir.glob("*.log")}


@pytest.mark.parametrize("layout", ["separate", "engine"])
async def test_processors_wait_out_a_broker_outage(
    outage: Outage, layout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LAYOUT_ENV, layout)
    async with Deployment(outage.settings, [outage.scenarios], default_scenario="steady",
                          wait_tools=("calculator",)) as d:  # fmt: skip
        assert d.procs is not None
        tasks = [f"[scenario:steady] r{i} {uuid.uuid4().hex[:6]}" for i in range(RUNS)]
        run_ids = [await d.client.request_run(RunRequest(task=t, tools=["calculator"], max_steps=12)) for t in tasks]
        async for entry in d.client.follow(run_ids[0], timeout_s=60):
            if isinstance(entry.event, ToolCallCompleted):
                break  # in flight: model calls are being made right now
        before = _log_lines(d)
        await outage.kafka.kill()
        await asyncio.sleep(8.0)
        assert d.procs.crashed() == [], "a processor exited while the broker was down"
        await outage.kafka.start()
        for run_id in run_ids:
            entries = [e async for e in d.client.follow(run_id, timeout_s=120)]
            assert isinstance(entries[-1].event, RunCompleted), entries[-1].event
        assert d.procs.crashed() == [], "a processor exited after the broker came back"
        after = _log_lines(d)
        async with httpx.AsyncClient() as http:
            stats = (await http.get(f"{d.model_url}/_scripted/stats")).json()
        for run_id in run_ids:
            for entry in await d.client.read_run(run_id):
                if isinstance(entry.event, LlmCallCompleted):
                    receipts = stats["calls"][entry.event.call_id]
                    assert len(receipts) == 1, f"model call {entry.event.call_id} was sent {len(receipts)} times"
    # One line per change of state, not one per reconnect attempt: the whole outage and recovery in
    # a bounded number of lines per process (measured before the fix: about 80 lines a second).
    grown = {name: after[name] - before.get(name, 0) for name in after}
    assert max(grown.values()) < 60, grown
