"""The scripted model's context-faithful mode answers only from what its prompt holds, over both wire
protocols and real HTTP: it fetches the task's pages in order, answers from FACT lines, reads a
cleared result back through its handle, says UNKNOWN when a fact is gone, and summarizes without
losing what it could read back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from agentstream.doubles.pages_server import fact, render_page
from agentstream.doubles.scripted_model import ScriptedModelServer, running_scripted_model
from agentstream.doubles.scripted_model.faithful import SUMMARIZE_LINE

TASK = "[scenario:faithful] answer\nPAGES: p1,p2\nQUESTION: {k1}\nQUESTION: {k2}"
K1, V1 = fact("p1")
K2, V2 = fact("p2")
HANDLE = "blob:v1/default/run_x/" + "a" * 64 + "/84245"
CLEARED = (
    f'PAGE p1: holds the fact {K1}\np1 line 0\n[cleared: 84245 bytes; read it back with read_result(handle="{HANDLE}")]'
)
WIRES = ["openai", "anthropic"]

# A neutral conversation: (role, text, tool calls), role "tool" for a result; rendered per wire below.
Msg = tuple[str, str, list[tuple[str, dict[str, Any]]]]


def task() -> Msg:
    return ("user", TASK.format(k1=K1, k2=K2), [])


def fetched(page: str, result: str | None = None) -> list[Msg]:
    return [("assistant", "", [("fetch_page", {"page": page})]), ("tool", result or render_page(page), [])]


def body(wire: str, messages: list[Msg], system: str = "be faithful") -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for i, (role, text, calls) in enumerate(messages):
        cid = f"c{i}"
        if wire == "openai":
            if role == "tool":
                out.append({"role": "tool", "tool_call_id": f"c{i - 1}", "content": text})
            elif calls:
                fns = [{"id": cid, "type": "function", "function": {"name": n, "arguments": orjson.dumps(a).decode()}}
                       for n, a in calls]  # fmt: skip
                out.append({"role": role, "content": text or None, "tool_calls": fns})
            else:
                out.append({"role": role, "content": text})
        elif role == "tool":
            out.append(
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"c{i - 1}", "content": text}]}
            )
        else:
            blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
            blocks += [{"type": "tool_use", "id": cid, "name": n, "input": a} for n, a in calls]
            out.append({"role": role, "content": blocks})
    if wire == "openai":
        return {"model": "m", "messages": [{"role": "system", "content": system}, *out]}
    return {"model": "m", "max_tokens": 100, "system": system, "messages": out}


@pytest.fixture(scope="module")
async def client() -> AsyncIterator[httpx.AsyncClient]:
    server = ScriptedModelServer(scenarios=[{"name": "faithful", "turns": [], "faithful": True}], default="faithful")
    async with running_scripted_model(server=server) as url, httpx.AsyncClient(base_url=url) as http:
        yield http


async def ask(
    client: httpx.AsyncClient, wire: str, messages: list[Msg], system: str = "be faithful"
) -> tuple[str, list[tuple[str, dict[str, Any]]], int]:
    """(the answer's text, its tool calls, its prompt tokens)."""
    path = "/v1/chat/completions" if wire == "openai" else "/v1/messages"
    reply = await client.post(path, json=body(wire, messages, system))
    assert reply.status_code == 200, reply.text
    d = reply.json()
    if wire == "openai":
        msg = d["choices"][0]["message"]
        calls = [(c["function"]["name"], orjson.loads(c["function"]["arguments"])) for c in msg.get("tool_calls") or []]
        return msg["content"] or "", calls, d["usage"]["prompt_tokens"]
    text = "".join(b["text"] for b in d["content"] if b["type"] == "text")
    calls = [(b["name"], b["input"]) for b in d["content"] if b["type"] == "tool_use"]
    usage = d["usage"]
    return text, calls, usage["input_tokens"] + usage["cache_read_input_tokens"]


@pytest.mark.parametrize("wire", WIRES)
async def test_fetches_the_pages_in_order_then_answers_from_the_facts(client: httpx.AsyncClient, wire: str) -> None:
    assert (await ask(client, wire, [task()]))[:2] == ("", [("fetch_page", {"page": "p1"})])
    assert (await ask(client, wire, [task(), *fetched("p1")]))[:2] == ("", [("fetch_page", {"page": "p2"})])
    text, calls, tokens = await ask(client, wire, [task(), *fetched("p1"), *fetched("p2")])
    assert (text, calls) == (f"ANSWERS: {K1} = {V1}; {K2} = {V2}", [])
    # Usage as the server counts any prompt: its characters / 4 (the pages dominate it).
    assert abs(tokens - (len(render_page("p1")) + len(render_page("p2"))) // 4) < 200


@pytest.mark.parametrize("wire", WIRES)
async def test_a_cleared_fact_is_read_back_through_its_handle_once(client: httpx.AsyncClient, wire: str) -> None:
    history = [task(), *fetched("p1", CLEARED), *fetched("p2")]
    text, calls, _ = await ask(client, wire, history)
    assert (text, calls) == ("", [("read_result", {"handle": HANDLE, "length": 65536})])
    back = f"[read_result: chars 0-65536 of 84245]\n{render_page('p1')[:65536]}"
    read = [("assistant", "", calls), ("tool", back, [])]
    assert (await ask(client, wire, history + read))[0] == f"ANSWERS: {K1} = {V1}; {K2} = {V2}"
    # Read back, yet the fact is not in the prompt (cleared again): not read twice, UNKNOWN.
    gone = [("assistant", "", calls), ("tool", "[read_result: chars 0-10 of 84245]\nPAGE p1: h", [])]
    assert (await ask(client, wire, history + gone))[:2] == (f"ANSWERS: {K1} = UNKNOWN; {K2} = {V2}", [])


@pytest.mark.parametrize("wire", WIRES)
async def test_a_fact_dropped_without_a_handle_is_unknown(client: httpx.AsyncClient, wire: str) -> None:
    dropped = [task(), *fetched("p1", f"PAGE p1: holds the fact {K1}\n(the rest was dropped)"), *fetched("p2")]
    assert (await ask(client, wire, dropped))[:2] == (f"ANSWERS: {K1} = UNKNOWN; {K2} = {V2}", [])


@pytest.mark.parametrize("wire", WIRES)
async def test_a_summary_keeps_what_was_fetched_the_facts_and_the_handles(client: httpx.AsyncClient, wire: str) -> None:
    transcript = (f'[assistant] fetch_page {{"page": "p1"}}\n[tool] {CLEARED}\n'
                  f'[assistant] fetch_page {{"page": "p2"}}\n[tool] {render_page("p2")[:60000]}')  # fmt: skip
    system = SUMMARIZE_LINE + "\nKeep every fact."
    text, calls, _ = await ask(client, wire, [("user", transcript, [])], system)
    marker = f'[cleared: 84245 bytes; read it back with read_result(handle="{HANDLE}")]'
    assert calls == [] and text.splitlines() == [
        "fetched: p1,p2",
        f"FACT {K2} = {V2}",
        f"PAGE p1: holds the fact {K1} {marker}",
    ]
    # The next step sees the summary in place of the history: nothing is fetched again, the
    # cleared fact is read back through the handle the summary kept.
    summarized = "Summary of the earlier steps (context compacted):\n" + text
    compacted = [task(), ("user", summarized, [])]
    assert (await ask(client, wire, compacted))[:2] == ("", [("read_result", {"handle": HANDLE, "length": 65536})])
    # A summary of a transcript that holds an earlier summary keeps its pages, facts and pointers,
    # and which handles were read back already: the model does not read them again.
    read = f'[call read_result] {{"handle": "{HANDLE}", "length": 65536}}\n[tool] [read_result: chars 0-9 of 84245]'
    again, _, _ = await ask(client, wire, [("user", f"[user] {summarized}\n{read}", [])], system)
    assert again.splitlines() == [text.splitlines()[0], f"read back: {HANDLE}", *text.splitlines()[1:]]
    after = [task(), ("user", "Summary of the earlier steps (context compacted):\n" + again, [])]
    assert (await ask(client, wire, after))[:2] == (f"ANSWERS: {K1} = UNKNOWN; {K2} = {V2}", [])


async def test_a_task_without_pages_or_questions_gets_a_clear_answer(client: httpx.AsyncClient) -> None:
    text, calls, _ = await ask(client, "openai", [("user", "[scenario:faithful] hello", [])])
    assert calls == [] and "names no `PAGES:` and no `QUESTION:` line" in text
