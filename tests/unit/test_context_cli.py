"""Context settings at the command line and in `runs show`: `run --context/--compact` and
`tools policy --context` are checked at parsing as the orchestrator will read them, a bad tenant
default is never stored, and a run's compactions (and their summarization calls) are shown."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from agentstream.cli.commands import _event_dicts, _print_trajectory, context_of
from agentstream.cli.main import parser
from agentstream.client.journal import JournalClient, JournalEntry, RunRequest
from agentstream.config import ModelSettings, Settings
from agentstream.context.settings import ContextSettingsError
from agentstream.events import (
    ContextCompacted,
    LlmCallCompleted,
    LlmCallFailed,
    LlmCallRequested,
    RunCompleted,
    RunEvent,
    RunRequested,
    RunStarted,
)
from agentstream.registry.admin import RegistryError, set_policy
from agentstream.registry.entry import TenantPolicy
from agentstream.trajectory import describe, summarize, trajectory


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["run", "t", "--context", "{mode: on}"], "not JSON"),
        (["run", "t", "--context", '["on"]'], "must be a JSON object"),
        (["run", "t", "--context", '{"trigger_tokens": 5}'], "context.trigger_tokens must be an integer from 1000"),
        (["run", "t", "--context", '{"mode": "auto"}'], "context.mode must be 'off' or 'on'"),
        (["run", "t", "--context", '{"keep": 2}'], "unknown context setting(s): keep"),
        (["tools", "policy", "acme", "--context", '{"summary_tier": "huge"}'], "context.summary_tier must be one of"),
    ],
)
def test_bad_context_settings_are_refused_at_parsing_naming_the_flag(
    argv: list[str], why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parser().parse_args(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument --context:" in err and why in err, err


def test_compact_turns_the_mode_on_over_the_given_settings() -> None:
    def given(*flags: str) -> dict[str, object] | None:
        return context_of(parser().parse_args(["run", "t", *flags]))

    assert given() is None  # the tenant's defaults alone
    assert given("--compact") == {"mode": "on"}
    assert given("--context", '{"trigger_tokens": 32000, "mode": "off"}', "--compact") == {
        "trigger_tokens": 32000, "mode": "on"
    }  # fmt: skip
    policy = parser().parse_args(["tools", "policy", "acme", "--context", '{"mode": "on", "keep_turns": 3}'])
    assert policy.context == {"mode": "on", "keep_turns": 3}


async def test_a_bad_tenant_default_or_run_setting_is_never_journaled(tmp_path: Path) -> None:
    # Refused before anything is published (the broker named here does not exist).
    settings = Settings("127.0.0.1:1", "ctx", tmp_path, ModelSettings(), kafka_extra={})
    for bad, why in [('{"keep_turns": 99}', "keep_turns"), ('["on"]', "must be an object"), ("{", "not JSON")]:
        with pytest.raises(RegistryError, match=why):
            await set_policy(settings, "acme", TenantPolicy(context_json=bad), by="test")
    # Nor is a run's: the Kafka-level client refuses it before it connects.
    journal = JournalClient(settings)
    with pytest.raises(ContextSettingsError, match=r"context\.summarize must be true or false"):
        await journal.request_run(RunRequest("t", context={"summarize": "yes"}))
    await journal.aclose()
    # What the CLI stores reads back as it was given, next to the rest of the policy.
    stored = TenantPolicy.from_json(TenantPolicy(context_json='{"mode":"on","keep_turns":3}').to_json())
    assert orjson.loads(stored.context_json) == {"mode": "on", "keep_turns": 3}


RUN, TENANT = "run_ctx", "acme"
PINNED = '{"mode":"on","trigger_tokens":32000,"keep_turns":1,"summarize":true,"exclude_tools":[]}'
SUMMARY = "fetched: p1,p2 FACT colour = teal " + "x" * 200


def _compacted_run() -> list[JournalEntry]:
    def llm_done(call_id: str, text: str) -> LlmCallCompleted:
        return LlmCallCompleted(f"{call_id}/completed", RUN, TENANT, 2, call_id, "scripted", "scripted", text, "[]",
                                "stop", 900, 40, 0, 1.0, 1)  # fmt: skip

    call = f"{RUN}/s0002/compact01"
    summarizing = LlmCallRequested(f"{call}/requested", RUN, TENANT, 2, call, "small", "[]", "[]", 1000, "small", "",
                                   "compaction")  # fmt: skip
    compacted = ContextCompacted(f"{RUN}/s0002/compacted01", RUN, TENANT, 2, 1, "summarize", 6, '["h1","h2","h3"]',
                                 SUMMARY, call, 71_234, 8_765, "over the trigger")  # fmt: skip
    events: list[RunEvent] = [
        RunRequested(f"{RUN}/requested", RUN, TENANT, "research", "scripted", [], 10, "k"),
        RunStarted(f"{RUN}/started", RUN, TENANT, "scripted", "[]", 10, "", context_json=PINNED),
        summarizing,
        llm_done(call, SUMMARY),
        compacted,
        llm_done(f"{RUN}/s0003/llm", "ANSWERS: colour = teal"),
        RunCompleted(f"{RUN}/done", RUN, TENANT, 3, "ANSWERS: colour = teal", "answered"),
    ]
    return [JournalEntry(e, i, 1000 + i) for i, e in enumerate(events)]


def test_runs_show_prints_each_compaction_and_marks_its_summarization_call(capsys: pytest.CaptureFixture[str]) -> None:
    entries = _compacted_run()
    _print_trajectory(entries)
    out = capsys.readouterr().out
    assert "context=on (over ~32000 tokens, keep 1 turns, summarize)" in out
    assert "step   2  compaction: summarizing the earlier steps (tier small)" in out
    assert "step   2  compaction summary (900 tokens in): fetched: p1,p2" in out
    (line,) = [ln for ln in out.splitlines() if "context compacted" in ln]
    said = "context compacted #1 (summarize): ~71234 -> ~8765 tokens, cleared 3 results, summary: fetched: p1,p2"
    assert said in line
    assert line.endswith("…") and len(line.split("summary: ", 1)[1]) == 120  # the summary's first 120 characters
    assert "model → answer: ANSWERS" in out  # the run's own call reads as before
    clear = ContextCompacted("e", RUN, TENANT, 5, 2, "clear", 4, '["h9"]', "", "", 66_000, 30_000, "")
    assert describe(clear) == "step   5  context compacted #2 (clear): ~66000 -> ~30000 tokens, cleared 1 results"
    failed = LlmCallFailed(
        "f", RUN, TENANT, 5, f"{RUN}/s0005/compact03", "scripted", "timeout", "no answer", None, False, 1, True
    )
    assert describe(failed) == "step   5  compaction call error (attempt 1, gave up): no answer"
    # The summary counts them, `--json` carries them whole, and a comparison of two runs sees the summary.
    summary = summarize(entries).to_dict()
    assert (summary["compactions"], summary["model_calls"]) == (1, 2)
    shown = [e for e in _event_dicts(entries) if e["type"] == "ContextCompacted"]
    assert [(e["compaction"], e["tokens_before"], e["summary"]) for e in shown] == [(1, 71_234, SUMMARY)]
    assert [e["purpose"] for e in _event_dicts(entries) if e["type"] == "LlmCallRequested"] == ["compaction"]
    assert ("compaction", "2", SUMMARY) in trajectory(entries)
