"""The context-faithful mode of the scripted model (a scenario's `faithful`): no scripted turns; each
answer follows only from what the request's prompt holds, so a compaction that drops a needed fact
makes the run answer UNKNOWN instead of passing by luck (bench/context.py).

- A request whose system text starts with `SUMMARIZE_LINE` is a summarization request: the answer
  is a `fetched: <page ids>` line, a `read back: <handles>` line (when any was), every
  `FACT <key> = <value>` line of the transcript, and one line per cleared result (its preview's
  first line and its `[cleared: ...]` marker), so a cleared fact stays reachable through its
  handle, as a real summarizer keeps a pointer to it, and no handle is read twice.
- Otherwise the task (the first user message) names `PAGES: p1,p2,...` and `QUESTION: <key>` lines:
  fetch the next page not fetched yet; then answer every question from a FACT line in the prompt;
  a missing one is read back through a cleared result's handle whose preview names its key (one
  `read_result` at a time, each handle once); when nothing is left to read, its answer is UNKNOWN.

The provider sees offloaded results resolved (the model invoker puts the blob's text back), so this
only ever reads message text, whichever wire (OpenAI or Anthropic) the request came over.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from agentstream.doubles.scripted_model.scenarios import ScriptedToolCall, Turn
from agentstream.doubles.scripted_model.wire import chat_content_text, text_of_blocks

SUMMARIZE_LINE = "agentstream: summarize the conversation"
FETCH_TOOL = "fetch_page"
READ_TOOL = "read_result"
READ_LENGTH = 65536

FACT = re.compile(r"^FACT[ \t]+(\S+)[ \t]+=[ \t]+(\S[^\n]*?)[ \t]*$", re.MULTILINE)
FETCHED = re.compile(r"^fetched:[ \t]*([^\n]*)$", re.MULTILINE)
READ_BACK = re.compile(r"^read back:[ \t]*([^\n]*)$", re.MULTILINE)
# A read_result call as a transcript renders it: `[call read_result] {"handle": "blob:...", ...}`
# (not a cleared marker's `read it back with read_result(handle="...")`, which was not read yet).
READ_MENTION = re.compile(r"\[call read_result\][ \t]*\{[^\n]*?\"handle\"[ \t]*:[ \t]*\"([^\"\s]+)\"")
PAGES = re.compile(r"^PAGES:[ \t]*([^\n]*)$", re.MULTILINE)
QUESTION = re.compile(r"^QUESTION:[ \t]*(\S+)", re.MULTILINE)
CLEARED = re.compile(r"\[cleared: \d+ bytes; read it back with read_result\(handle=\"([^\"\s]+)\"\)\]")
PAGE_HEAD = re.compile(r"^PAGE[ \t]+(\S+?):", re.MULTILINE)
# A cleared result keeps 256 characters of its preview; the rest of the window is the transcript's
# `[role] ` tag and slack. Text further back belongs to other messages.
PREVIEW_WINDOW = 320
ROLE_TAG = re.compile(r"^\[[a-z]+\] ", re.MULTILINE)
# A fetch_page call as a transcript may render it (`fetch_page {"page": "p3"}` or `fetch_page(page=p3)`).
FETCH_MENTION = re.compile(r"fetch_page\W{1,12}(?:page\W{1,6})?([A-Za-z0-9_-]+)")


@dataclass(frozen=True, slots=True)
class Prompt:
    """A request's prompt as the faithful model reads it, whichever wire it came over."""

    system: str
    task: str  # the first user message that is not a tool result
    texts: tuple[str, ...]  # every message's text (system first, tool results included), in order
    calls: tuple[tuple[str, Mapping[str, Any]], ...]  # every assistant tool call: (name, arguments)

    @property
    def text(self) -> str:
        return "\n".join(self.texts)


def _arguments(raw: Any) -> Mapping[str, Any]:
    if isinstance(raw, Mapping):
        return raw
    if isinstance(raw, str):
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def _openai_prompt(body: Mapping[str, Any]) -> Prompt:
    system, task = "", None
    texts: list[str] = []
    calls: list[tuple[str, Mapping[str, Any]]] = []
    for m in body.get("messages") or []:
        if not isinstance(m, Mapping):
            continue
        text = chat_content_text(m.get("content"))
        role = m.get("role")
        if role in ("system", "developer") and not system:
            system = text
        if role == "user" and task is None:
            task = text
        for c in m.get("tool_calls") or [] if role == "assistant" else []:
            fn = c.get("function") if isinstance(c, Mapping) else None
            if isinstance(fn, Mapping):
                calls.append((str(fn.get("name", "")), _arguments(fn.get("arguments"))))
        texts.append(text)
    return Prompt(system, task or "", tuple(texts), tuple(calls))


def _anthropic_block_text(block: Any) -> str:
    if isinstance(block, str):
        return block
    if not isinstance(block, Mapping):
        return ""
    if block.get("type") == "text":
        return str(block.get("text", ""))
    if block.get("type") == "tool_result":
        inner = block.get("content", "")
        return inner if isinstance(inner, str) else text_of_blocks(inner or [])
    return ""


def _anthropic_prompt(body: Mapping[str, Any]) -> Prompt:
    raw_system = body.get("system", "")
    system = raw_system if isinstance(raw_system, str) else text_of_blocks(raw_system or [])
    task = None
    texts = [system]
    calls: list[tuple[str, Mapping[str, Any]]] = []
    for m in body.get("messages") or []:
        if not isinstance(m, Mapping):
            continue
        content = m.get("content")
        blocks: list[Any] = [content] if isinstance(content, str) else list(content or [])
        text = "\n".join(_anthropic_block_text(b) for b in blocks)
        results = any(isinstance(b, Mapping) and b.get("type") == "tool_result" for b in blocks)
        if m.get("role") == "user" and task is None and not results:
            task = text
        if m.get("role") == "assistant":
            for b in blocks:
                if isinstance(b, Mapping) and b.get("type") == "tool_use":
                    calls.append((str(b.get("name", "")), _arguments(b.get("input"))))
        texts.append(text)
    return Prompt(system, task or "", tuple(texts), tuple(calls))


def read_prompt(body: Mapping[str, Any], wire: str) -> Prompt:
    """`wire`: the protocol's name, `openai` or `anthropic`."""
    return _anthropic_prompt(body) if wire == "anthropic" else _openai_prompt(body)


def _ordered(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(i for i in items if i))


def _cleared(texts: Iterable[str]) -> list[tuple[str, str, str]]:
    """Every `[cleared: ...]` marker as (its preview: the text before it, back to the previous
    marker, the message's start or `PREVIEW_WINDOW` characters; its handle; the marker itself)."""
    out: list[tuple[str, str, str]] = []
    for text in texts:
        start = 0
        for m in CLEARED.finditer(text):
            out.append((text[max(start, m.start() - PREVIEW_WINDOW) : m.start()], m.group(1), m.group(0)))
            start = m.end()
    return out


def _head(preview: str) -> str:
    """A cleared result's first line: after the transcript's `[role] ` tag when there is one. A
    marker on the same line as text is an earlier summary's pointer: that line is its head."""
    inline = preview.rsplit("\n", 1)[-1]
    if inline.strip():
        return ROLE_TAG.sub("", inline).strip()
    tags = list(ROLE_TAG.finditer(preview))
    lines = preview[tags[-1].end() :].splitlines() if tags else preview.splitlines()[1:] or preview.splitlines()
    return next((line.strip() for line in lines if line.strip()), "a result")


def _mentions(text: str, key: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(key)}(?![\w-])", text) is not None


def _listed(pattern: re.Pattern[str], text: str) -> list[str]:
    """The comma-separated items of every line `pattern` matches (`fetched:`, `read back:`)."""
    return [p.strip() for line in pattern.findall(text) for p in line.split(",")]


def summary(prompt: Prompt) -> str:
    """The answer to a summarization request: what was fetched, the facts, the pointers."""
    transcript = "\n".join(prompt.texts[1:]) if prompt.texts and prompt.texts[0] == prompt.system else prompt.text
    fetched = _ordered(
        [*_listed(FETCHED, transcript), *FETCH_MENTION.findall(transcript), *PAGE_HEAD.findall(transcript),
         *(str(a.get("page", "")) for name, a in prompt.calls if name == FETCH_TOOL)]
    )  # fmt: skip
    # Handles read back already: a summary that forgot them would have the model read them again.
    read = _ordered([*_listed(READ_BACK, transcript), *READ_MENTION.findall(transcript)])
    lines = [f"fetched: {','.join(fetched)}", *([f"read back: {','.join(read)}"] if read else [])]
    lines += _ordered(f"FACT {k} = {v}" for k, v in FACT.findall(transcript))
    for preview, _, marker in _cleared([transcript]):
        lines.append(f"{_head(preview)} {marker}")
    return "\n".join(_ordered(lines))


def _answer(questions: list[str], facts: Mapping[str, str]) -> Turn:
    return Turn(text="ANSWERS: " + "; ".join(f"{q} = {facts.get(q, 'UNKNOWN')}" for q in questions))


def faithful_turn(prompt: Prompt) -> Turn:
    if prompt.system.startswith(SUMMARIZE_LINE):
        return Turn(text=summary(prompt))
    pages = [p.strip() for line in PAGES.findall(prompt.task) for p in line.split(",") if p.strip()]
    questions = _ordered(QUESTION.findall(prompt.task))
    if not pages and not questions:
        return Turn(text="faithful model: the task names no `PAGES:` and no `QUESTION:` line")
    text = prompt.text
    fetched = {str(a.get("page", "")) for name, a in prompt.calls if name == FETCH_TOOL}
    fetched.update(_listed(FETCHED, text))
    for page in pages:
        if page not in fetched:
            return Turn(tool_calls=(ScriptedToolCall(FETCH_TOOL, {"page": page}),))
    facts: dict[str, str] = {}
    for key, value in FACT.findall(text):
        facts.setdefault(key, value)
    missing = [q for q in questions if q not in facts]
    read = {str(a.get("handle", "")) for name, a in prompt.calls if name == READ_TOOL}
    read.update(_listed(READ_BACK, text))
    markers = _cleared(prompt.texts)
    for key in missing:
        for preview, handle, _ in markers:
            if handle not in read and _mentions(preview, key):
                return Turn(tool_calls=(ScriptedToolCall(READ_TOOL, {"handle": handle, "length": READ_LENGTH}),))
    return _answer(questions, facts)


def reply_index(key: str) -> int:
    """A turn index for the reply's tool call ids: a compaction shortens the history, so counting
    assistant messages (what scripted turns use) would give a new call the id of a kept one."""
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)
