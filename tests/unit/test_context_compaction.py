"""Context compaction in the orchestrator's pure core: clearing old offloaded results, the
summarization call (journaled, routed, budgeted like any model call), its failure, the settings,
and replay of a compacted run, driven without Kafka over hand-written journals."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import replace

import orjson
import pytest

from agentstream import ids
from agentstream.context.compaction import SUMMARIZER_SYSTEM_PROMPT, SUMMARY_PREFIX, apply, plan
from agentstream.context.settings import ContextSettings, ContextSettingsError, parse_settings
from agentstream.context.tokens import prompt_tokens
from agentstream.events import (
    BudgetExceeded,
    ContextCompacted,
    LlmCallCompleted,
    LlmCallFailed,
    LlmCallRequested,
    ResumeRequested,
    RunEvent,
    RunRequested,
    RunStarted,
    ToolCallCompleted,
    ToolCallRequested,
)
from agentstream.llm import Message, ToolCall, ToolSpec, messages_from_json
from agentstream.processors.orchestrator.decide import OrchestratorConfig, decide
from agentstream.processors.orchestrator.evolve import evolve
from agentstream.processors.orchestrator.state import RunState
from agentstream.tools.replay import replay_events

RUN, TENANT = "run_ctx", "acme"
PAGE = ToolSpec("fetch_page", "a page", {"type": "object", "properties": {"page": {"type": "string"}}})
READ = ToolSpec("read_result", "read back", {"type": "object", "properties": {"handle": {"type": "string"}}})
CATALOG = {"fetch_page": PAGE, "read_result": READ}
ON = {"mode": "on", "trigger_tokens": 5000, "keep_turns": 1}


def handle(page: int, size: int = 40_000) -> str:
    return f"blob:v1/{TENANT}/{RUN}/{hashlib.sha256(str(page).encode()).hexdigest()}/{size}"


class Run:
    """The orchestrator's core with its journal: each decided event is appended and evolved."""

    def __init__(
        self, context: dict[str, object] | None = None, defaults: str = "", tools: tuple[str, ...] = ()
    ) -> None:
        self.defaults = defaults
        self.journal: list[RunEvent] = []
        self.state: RunState | None = None
        ctx = "" if context is None else orjson.dumps(context).decode()
        self.feed(
            RunRequested(ids.run_requested_id(RUN), RUN, TENANT, "task", "m", list(tools), 40, "k", context_json=ctx)
        )

    def feed(self, event: RunEvent) -> list[RunEvent]:
        self.journal.append(event)
        self.state = evolve(event, self.state)
        out: list[RunEvent] = []
        while self.state is not None:
            decided = [e for e in decide(self.state, CATALOG, OrchestratorConfig(), None, "flag", None, self.defaults)
                       if e.event_id not in {j.event_id for j in self.journal}]  # fmt: skip
            if not decided:
                return out
            for d in decided:
                self.journal.append(d)
                self.state = evolve(d, self.state)
            out += decided
        return out

    def model(self, call: LlmCallRequested, text: str, calls: list[tuple[str, str]] = ()) -> list[RunEvent]:  # type: ignore[assignment]
        tool_calls = [{"id": f"c{call.step}_{i}", "name": n, "arguments_json": a} for i, (n, a) in enumerate(calls)]
        return self.feed(
            LlmCallCompleted(
                ids.completed_event_id(call.call_id),
                RUN,
                TENANT,
                call.step,
                call.call_id,
                "scripted",
                "m",
                text,
                orjson.dumps(tool_calls).decode(),
                "tool_calls" if calls else "stop",
                10,
                5,
                0,
                1.0,
                1,
            )
        )

    def tool(self, request: ToolCallRequested, content: str, blob: str = "") -> list[RunEvent]:
        return self.feed(
            ToolCallCompleted(
                ids.completed_event_id(request.call_id),
                RUN,
                TENANT,
                request.step,
                request.call_id,
                request.tool,
                request.idempotency_key,
                content,
                False,
                1.0,
                result_blob=blob,
            )
        )

    def step(self, page: int, content: str, blob: str = "") -> list[RunEvent]:
        """One model turn asking for page `page`, and its result."""
        call = self.last(LlmCallRequested)
        (request,) = [
            e
            for e in self.model(call, "", [("fetch_page", f'{{"page": "p{page}"}}')])
            if isinstance(e, ToolCallRequested)
        ]
        return self.tool(request, content, blob)

    def last(self, kind: type[LlmCallRequested]) -> LlmCallRequested:
        return [e for e in self.journal if isinstance(e, kind)][-1]


def test_settings_parse_checked_with_the_field_named() -> None:
    assert parse_settings("") == ContextSettings()
    on = parse_settings('{"mode": "on", "exclude_tools": ["b", "a", "a"]}')
    assert on.on and on.exclude_tools == ("a", "b") and parse_settings(on.to_json()) == on
    over = parse_settings({"keep_turns": 3}, base=on)
    assert over.on and over.keep_turns == 3
    for bad, field in [("[1]", "object"), ('{"mode": "auto"}', "mode"), ('{"trigger_tokens": 10}', "trigger_tokens"),
                       ('{"keep_turns": true}', "keep_turns"), ('{"summary_tier": "gpt"}', "summary_tier"),
                       ('{"exclude_tools": ["' + "x" * 200 + '"]}', "exclude_tools"), ('{"nope": 1}', "unknown"),
                       ("{not json", "not JSON")]:  # fmt: skip
        with pytest.raises(ContextSettingsError, match=field):
            parse_settings(bad)


def test_a_run_with_memory_is_told_where_it_is_and_others_are_not() -> None:
    catalog = {**CATALOG, "memory_view": ToolSpec("memory_view", "view", {"type": "object"})}
    state = evolve(RunRequested(ids.run_requested_id(RUN), RUN, TENANT, "t", "m", ["memory_view"], 5, "k"), None)
    assert state is not None
    (started,) = decide(state, catalog, OrchestratorConfig())
    assert isinstance(started, RunStarted) and "/memories" in started.system_prompt
    plain = evolve(RunRequested(ids.run_requested_id(RUN), RUN, TENANT, "t", "m", [], 5, "k"), None)
    assert plain is not None
    (started,) = decide(plain, catalog, OrchestratorConfig())
    assert isinstance(started, RunStarted) and started.system_prompt == OrchestratorConfig().system_prompt
    assert "memory_view" not in started.tools_json  # opt-in: "all tools" leaves memory out


def test_bad_context_settings_fail_the_run_at_start_with_the_reason() -> None:
    run = Run({"mode": "on", "trigger_tokens": 5})
    (failed,) = run.journal[1:]
    assert failed.type_name == "RunFailed" and "trigger_tokens" in failed.reason  # type: ignore[attr-defined]


def test_off_by_default_keeps_every_prompt_as_it_was() -> None:
    run = Run()
    started = next(e for e in run.journal if isinstance(e, RunStarted))
    assert started.context_json == ""
    for page in range(1, 6):
        run.step(page, "x" * 100 + "[offloaded]", handle(page))
    assert not [e for e in run.journal if isinstance(e, ContextCompacted)]
    last = messages_from_json(run.last(LlmCallRequested).messages_json)
    assert sum(1 for m in last if m.blob) == 5


def test_old_offloaded_results_are_cleared_in_one_chunk_and_read_result_is_pinned() -> None:
    run = Run(ON, tools=("fetch_page",))
    started = next(e for e in run.journal if isinstance(e, RunStarted))
    assert "read_result" in started.tools_json and parse_settings(started.context_json).trigger_tokens == 5000
    for page in range(1, 5):  # 1,500 tokens each: the trigger passes at the fourth result
        run.step(page, f"PAGE p{page}: preview", handle(page, 6000))
    (compacted,) = [e for e in run.journal if isinstance(e, ContextCompacted)]
    old = [handle(p, 6000) for p in (1, 2, 3)]
    assert compacted.kind == "clear" and orjson.loads(compacted.cleared_json) == old  # in one chunk
    assert compacted.tokens_before > 5000 > compacted.tokens_after
    after = messages_from_json(run.last(LlmCallRequested).messages_json)
    cleared = [m for m in after if m.role == "tool" and m.blob is None]
    assert len(cleared) == 3 and f'read_result(handle="{old[0]}")' in cleared[0].content
    assert cleared[0].content.startswith("PAGE p1: preview") and after[-1].blob == handle(4, 6000)  # the kept turn
    kinds = [e.type_name for e in run.journal]  # the compaction comes before the step's model call
    assert kinds[-2:] == ["ContextCompacted", "LlmCallRequested"]
    assert prompt_tokens(after) == compacted.tokens_after
    prompts = [run.last(LlmCallRequested).messages_json]
    for page in range(5, 8):  # append-only until the trigger passes again, at p7
        run.step(page, f"PAGE p{page}", handle(page, 6000))
        prompts.append(run.last(LlmCallRequested).messages_json)
    assert all(b.startswith(a[:-1]) for a, b in itertools.pairwise(prompts[:3]))
    assert [e.compaction for e in run.journal if isinstance(e, ContextCompacted)] == [1, 2]


def test_a_result_over_the_trigger_is_cleared_even_in_the_kept_turn() -> None:
    """A 50 MB page cannot be in any prompt: cleared at once, the model reads it back in slices."""
    run = Run(ON)
    huge = handle(1, 50 * 1024 * 1024)
    run.step(1, "PAGE p1: huge", huge)
    (compacted,) = [e for e in run.journal if isinstance(e, ContextCompacted)]
    assert orjson.loads(compacted.cleared_json) == [huge] and compacted.tokens_after < 5000
    prompt = messages_from_json(run.last(LlmCallRequested).messages_json)
    assert prompt[-1].blob is None and f'read_result(handle="{huge}")' in prompt[-1].content


def test_a_read_back_in_the_kept_turn_is_never_cleared_however_large() -> None:
    run = Run({**ON, "trigger_tokens": 1000})
    run.step(1, "PAGE p1", handle(1, 8000))  # over the trigger alone: cleared at once
    call = run.last(LlmCallRequested)
    args = f'{{"handle": "{handle(1, 8000)}", "length": 65536}}'
    (read,) = [e for e in run.model(call, "", [("read_result", args)]) if isinstance(e, ToolCallRequested)]
    run.tool(read, "[read_result: chars 0-8000 of 8000]", handle(2, 8100))
    prompt = messages_from_json(run.last(LlmCallRequested).messages_json)
    assert prompt[-1].blob == handle(2, 8100)  # the model sees what it read


def test_excluded_tools_are_never_cleared() -> None:
    run = Run({**ON, "exclude_tools": ["fetch_page"], "summarize": False})
    for page in range(1, 4):
        run.step(page, "preview", handle(page))
    assert not [e for e in run.journal if isinstance(e, ContextCompacted)]


def test_a_summary_replaces_the_old_turns_through_a_journaled_routed_model_call() -> None:
    run = Run({**ON, "summary_tier": "small"})
    for page in range(1, 4):  # inline results (not offloaded): only a summary can shrink them
        run.step(page, f"FACT k{page} = v{page} " + "y" * 8000)
    (summarize,) = [e for e in run.journal if isinstance(e, LlmCallRequested) and e.purpose == "compaction"]
    assert summarize.tier == "small" and summarize.tools_json == "[]" and summarize.step == run.state.step  # type: ignore[union-attr]
    asked = messages_from_json(summarize.messages_json)
    assert asked[0].content == SUMMARIZER_SYSTEM_PROMPT and "[call fetch_page]" in asked[1].content
    assert run.journal[-1] is summarize  # the step's model call waits for the summary
    run.model(summarize, "fetched: p1,p2\nFACT k1 = v1\nFACT k2 = v2")
    (compacted,) = [e for e in run.journal if isinstance(e, ContextCompacted)]
    assert compacted.kind == "summarize" and compacted.summary_call_id == summarize.call_id
    prompt = messages_from_json(run.last(LlmCallRequested).messages_json)
    assert [m.role for m in prompt] == ["system", "user", "user", "assistant", "tool"]
    assert prompt[2].content == SUMMARY_PREFIX + "fetched: p1,p2\nFACT k1 = v1\nFACT k2 = v2"
    assert prompt[-1].content.startswith("FACT k3 = v3")  # the kept turn, intact
    result = replay_events(run.journal)
    assert result.deterministic, result.divergences
    assert result.decisions_matched == sum(e.type_name in ("LlmCallRequested", "ContextCompacted", "RunStarted",
                                                           "ToolCallRequested") for e in run.journal)  # fmt: skip


def test_a_failed_summary_clears_only_and_the_run_goes_on() -> None:
    run = Run({**ON, "keep_turns": 0})  # everything before the call is old
    two = [("fetch_page", '{"page": "p1"}'), ("fetch_page", '{"page": "p2"}')]
    inline, offloaded = [e for e in run.model(run.last(LlmCallRequested), "", two) if isinstance(e, ToolCallRequested)]
    run.tool(inline, "inline " + "w" * 24000)
    run.tool(offloaded, "PAGE p2", handle(2, 8000))
    summarize = run.last(LlmCallRequested)
    assert summarize.purpose == "compaction" and summarize.call_id == ids.compaction_call_id(RUN, 1, 1)
    run.feed(LlmCallFailed(f"{summarize.call_id}/failed1", RUN, TENANT, summarize.step, summarize.call_id,
                           "scripted", "server_error", "503", 503, True, 3, True))  # fmt: skip
    (compacted,) = [e for e in run.journal if isinstance(e, ContextCompacted)]
    assert compacted.kind == "clear" and orjson.loads(compacted.cleared_json) == [handle(2, 8000)]
    assert "summarization call failed" in compacted.reason
    assert run.last(LlmCallRequested).purpose == "step" and run.state and run.state.status == "running"
    assert replay_events(run.journal).deterministic


def test_a_refused_summary_halts_the_run_and_a_resume_asks_the_same_call() -> None:
    run = Run(ON)
    for page in range(1, 3):
        run.step(page, "inline " + "w" * 12000)
    summarize = run.last(LlmCallRequested)
    assert summarize.purpose == "compaction"
    run.feed(BudgetExceeded(f"{summarize.call_id}/exceeded", RUN, TENANT, summarize.step, summarize.call_id, "model",
                            "budget_usd", "over budget", True, "{}", 1))  # fmt: skip
    assert run.state is not None and run.state.status == "halted"
    halted = [e for e in run.journal if e.type_name == "RunHalted"][-1]
    run.feed(ResumeRequested(f"{RUN}/resume1", RUN, TENANT, halted.halt, 0, "budget raised", "ops"))  # type: ignore[attr-defined]
    again = run.last(LlmCallRequested)
    assert again.purpose == "compaction" and again.event_id == summarize.event_id and again == summarize


def test_replay_catches_a_compaction_the_code_no_longer_decides() -> None:
    """A recording made without compaction, replayed by code that compacts (or the reverse): the
    prompts differ, and replay says so."""
    run = Run()
    for page in range(1, 6):
        run.step(page, "PAGE", handle(page, 6000))
    started = next(i for i, e in enumerate(run.journal) if isinstance(e, RunStarted))
    pinned = run.journal[started]
    assert isinstance(pinned, RunStarted)
    on = ContextSettings(mode="on", trigger_tokens=5000).to_json()
    journal = [*run.journal[:started], replace(pinned, context_json=on), *run.journal[started + 1 :]]
    result = replay_events(journal)
    assert not result.deterministic
    assert any("ContextCompacted" in d or "LlmCallRequested" in d for d in result.divergences), result.divergences


def test_apply_is_total_on_a_hostile_boundary() -> None:
    messages = (Message("system", "s"), Message("user", "t"), Message("assistant", "", (ToolCall("a", "x", "{}"),)))
    assert apply(messages, 99, (), "sum")[-1].role == "user"
    assert apply(messages, -5, ("not-a-handle",), None) == messages
    assert plan(messages, ContextSettings(mode="on", trigger_tokens=1000)) is None
