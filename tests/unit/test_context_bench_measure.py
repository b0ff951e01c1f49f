"""What bench/context.py reports rests on these rules (pure, no processes): an answer is parsed back
exactly, a request finds cached only the prefix it shares with its conversation's previous request
(plus that request's answer), offloaded results count their full size and are told apart by their
handle, and a summarization call is a conversation of its own."""

from __future__ import annotations

from agentstream.events import LlmCallRequested
from agentstream.llm import Message, ToolCall, messages_to_json
from bench.context_measure import PrefixCache, answers, requirements

RUN = "run_bench"
BLOB = "blob:v1/default/run_bench/" + "b" * 64 + "/40000"


def request(step: int, messages: list[Message], purpose: str = "step") -> LlmCallRequested:
    call_id = f"{RUN}/s{step:04d}/llm"
    return LlmCallRequested(f"{call_id}/requested", RUN, "default", step, call_id, "m", messages_to_json(tuple(messages)),
                            "[]", 64, "small", "test", purpose)  # fmt: skip


def test_answers_parse_back() -> None:
    assert answers("ANSWERS: fact_a = 01ab; fact_b = UNKNOWN") == {"fact_a": "01ab", "fact_b": "UNKNOWN"}
    assert answers("no answers here") == {}


def test_a_request_finds_cached_what_it_shares_with_the_previous_one() -> None:
    task = Message("user", "t" * 4000)
    call = Message("assistant", "", (ToolCall("c1", "fetch_page", '{"page":"p1"}'),))
    page = Message("tool", "preview", tool_call_id="c1", blob=BLOB)  # 40,000 characters resolved
    call2 = Message("assistant", "", (ToolCall("c2", "fetch_page", '{"page":"p2"}'),))
    cleared = Message("tool", "preview\n[cleared: 40000 bytes; ...]", tool_call_id="c1")
    cache = PrefixCache()
    cache.run([
        request(1, [task]),
        request(2, [task, call, page]),  # appended: the task and the previous answer are cached
        request(3, [task, call, page, call2, Message("tool", "x" * 400, tool_call_id="c2")]),
        request(4, [task, call, cleared, call2]),  # a compaction rewrote the page: cached up to it
        request(4, [Message("system", "agentstream: summarize"), Message("user", "s" * 800)], "compaction"),
    ])  # fmt: skip
    call_chars = len("fetch_page") + len('{"page":"p1"}')
    t1 = (2 + 4000) // 4
    t2 = (2 + 4000 + call_chars + 40000) // 4
    t3 = (2 + 4000 + 2 * call_chars + 40000 + 400) // 4
    t4 = (2 + 4000 + 2 * call_chars + len(cleared.content)) // 4
    # 1: cold; 2: the task and the answer to 1; 3: all of 2 and the answer to 2; 4: up to the cleared
    # page; the summarization call: cold (another conversation).
    cached = 0 + (2 + 4000 + call_chars) // 4 + (2 + 4000 + 2 * call_chars + 40000) // 4 + (2 + 4000 + call_chars) // 4
    assert cache.prompt_tokens == t1 + t2 + t3 + t4 + (2 + len("agentstream: summarize") + 800) // 4
    assert cache.cached_tokens == cached


def test_the_requirements_compare_on_with_off() -> None:
    off = {"success_rate": 1.0, "input_tokens_per_run": 1000, "peak_prompt_tokens": 300, "journal_bytes_per_run": 100}
    good = {"success_rate": 1.0, "input_tokens_per_run": 500, "peak_prompt_tokens": 100, "journal_bytes_per_run": 10}
    assert all(requirements(off, good).values())
    bad = {"success_rate": 0.9, "input_tokens_per_run": 501, "peak_prompt_tokens": 101, "journal_bytes_per_run": 11}
    assert not any(requirements(off, bad).values())
