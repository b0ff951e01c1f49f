"""`agentstream shadow` against a real broker: a handful of runs recorded by the orchestrator core
and journaled as its processors would (signed by their writers), one with a record of a schema
this code does not know, one whose beginning is gone; replayed in one bulk read of the journal."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from agentstream.cli.main import parser
from agentstream.client.journal import JournalClient
from agentstream.codec import MAGIC
from agentstream.config import Settings
from agentstream.credentials.signing_keys import component_keyring
from agentstream.events import RunEvent
from agentstream.kafka.producer import AsyncProducer, producer_config
from agentstream.security.journal_trust import JournalSigner
from agentstream.tools.shadow import AUTHORED
from agentstream.topics import JOURNAL, load_topics
from tests.unit.test_shadow import Recorder, registry

WRITER = {"LlmCallCompleted": "model-invoker", "ToolCallCompleted": "tool-executor"}


def _writer(event: RunEvent) -> str | None:
    return "orchestrator" if event.type_name in AUTHORED else WRITER.get(event.type_name)


async def _record(settings: Settings, tmp_path: Path) -> dict[str, list[RunEvent]]:
    runs: dict[str, list[RunEvent]] = {}
    for i in range(4):
        rec = Recorder(tmp_path / f"p{i}", registry(), run=f"run_{i}")
        if i % 2:
            rec.model(1, "nothing to look up", [])  # answers at once: no tool
        else:
            rec.two_steps()
        runs[rec.run] = [e for e in rec.journal if e.type_name != "EvalVerdict"]
    runs["run_1"] = runs["run_1"][2:]  # its beginning deleted
    client = JournalClient(settings)
    try:
        for events in runs.values():
            for event in events:
                await client.append(event, as_writer=_writer(event))
    finally:
        await client.aclose()
    # A model output in a schema newer than this code: its fingerprint is none we ship.
    topic = load_topics(settings.topic_prefix)[JOURNAL].name
    key, value = b"run_2/s0003/llm/completed", MAGIC + b"\x01" * 8 + b"\x00"
    signer = JournalSigner("model-invoker", component_keyring(settings, "admin"))
    headers = [("type", b"LlmCallCompleted"), *signer.headers(topic, key, "LlmCallCompleted", value)]
    producer = AsyncProducer(producer_config(settings.bootstrap_servers, settings.kafka_extra))
    # Wherever it lands (the reader reads every partition), its key says whose it is.
    await producer.send(topic, value, key=key, headers=headers)
    await producer.aclose()
    return runs


async def test_shadow_reports_each_run_and_the_aggregates(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    await _record(settings, tmp_path)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", settings.bootstrap_servers)
    monkeypatch.setenv("AGENTSTREAM_TOPIC_PREFIX", settings.topic_prefix)
    monkeypatch.setenv("AGENTSTREAM_HOME", str(settings.home))
    monkeypatch.setenv("AGENTSTREAM_KAFKA_CREDENTIALS_DIR", str(settings.kafka_credentials_dir))

    async def shadow(*argv: str) -> tuple[int, str]:
        args = parser().parse_args(["shadow", *argv])
        code = await args.handler(args)
        return code, capsys.readouterr().out

    out_file = tmp_path / "report.json"
    code, out = await shadow("--candidate", "v1", "--out", str(out_file))
    assert code == 1, out  # two runs could not be replayed
    report = orjson.loads(out_file.read_bytes())
    status = {r["run_id"]: (r["status"], (r["divergence"] or {}).get("kind")) for r in report["runs"]}
    assert status == {
        "run_0": ("identical", None), "run_1": ("unreplayable", "truncated"),
        "run_2": ("unreplayable", "undecodable"), "run_3": ("identical", None),
    }  # fmt: skip
    assert "4 runs, 2 identical, 0 diverged, 2 not replayable" in out and f"report: {out_file}" in out

    code, out = await shadow("--candidate", "tests.unit.test_shadow:ROUTED", "--json")
    summary = orjson.loads(out)["summary"]
    assert code == 1 and summary["candidate"] == "routed"  # run_0 looked up; run_3 used no tool
    assert (summary["diverged"], summary["tool_choice_changed"], summary["share_changed"]) == (1, 1, 0.5)
    assert summary["by_tool"]["lookup"] == {"runs": 1, "changed": 1, "candidate_calls": {"search": 1},
                                            "share_changed": 1.0}  # fmt: skip
    code, out = await shadow("--candidate", "tests.unit.test_shadow:ROUTED", "--runs", "1", "--json")
    (only,) = orjson.loads(out)["runs"]  # the last run started
    assert code == 0 and only["run_id"] == "run_3"
    code, out = await shadow("--candidate", "tests.unit.test_shadow:ROUTED", "--tenant", "nobody", "--json")
    assert code == 0 and orjson.loads(out)["summary"]["runs"] == 0
    code, out = await shadow("--candidate", "v9")
    assert code == 2 and "unknown orchestrator version 'v9'" in out
