"""Planning and applying a compaction: pure functions of a run's messages and its settings.

A run's messages are [system, task, (summary), turns...], a turn being an assistant message and
the tool results that answer it. A compaction keeps the system prompt, the task and the latest
`keep_turns` turns as they are, and works on what lies between ("old"):

* clearing: an old tool result offloaded to the blob store (it has a handle the model can read
  back with `read_result`) is replaced by a short preview and a marker naming the handle;
* summarizing: when clearing leaves the old part large, a model call (journaled, budgeted and
  routed like any other) summarizes it, and the old part becomes one summary message.

The orchestrator journals the result as `ContextCompacted`, whose evolve calls `apply` with what
the event holds: replay rebuilds the same prompts from the journal.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from agentstream.blobs.errors import BlobHandleInvalid
from agentstream.blobs.handle import BlobHandle
from agentstream.context.settings import ContextSettings
from agentstream.context.tokens import CHARS_PER_TOKEN, prompt_tokens
from agentstream.llm import Message

READ_RESULT_TOOL = "read_result"
PREVIEW_CHARS = 256
SUMMARY_PREFIX = "Summary of the earlier steps (context compacted):\n"
SUMMARIZER_SYSTEM_PROMPT = (
    "agentstream: summarize the conversation\n"
    "You compact an agent's working context. Summarize the transcript below for the agent that will "
    "continue the task: keep every fact, number, identifier, decision and open question it may still "
    "need, say which tools were called with which arguments, and keep the handles of cleared results "
    "(they can be read back with read_result). Answer with the summary only."
)
_HEAD = 2  # the system prompt and the task: never compacted


@dataclass(frozen=True, slots=True)
class CompactionPlan:
    boundary: int  # messages[boundary:] are the kept turns; messages[2:boundary] the old part
    cleared: tuple[str, ...]  # handles of the old tool results to clear, in message order
    summarize: bool
    tokens_before: int
    reason: str


def cleared_text(message: Message, handle: BlobHandle) -> str:
    preview = message.content[:PREVIEW_CHARS]
    return f'{preview}\n[cleared: {handle.size} bytes; read it back with read_result(handle="{handle}")]'


def _tool_names(messages: tuple[Message, ...]) -> dict[str, str]:
    return {c.id: c.name for m in messages if m.role == "assistant" for c in m.tool_calls}


def _boundary(messages: tuple[Message, ...], keep_turns: int) -> int:
    """Where the kept turns start: the `keep_turns`-th assistant message from the end (after the
    head); the end of the list when no turn is kept."""
    turns = [i for i in range(_HEAD, len(messages)) if messages[i].role == "assistant"]
    if keep_turns == 0:
        return len(messages)
    return turns[-keep_turns] if len(turns) >= keep_turns else _HEAD


def _clearable(messages: tuple[Message, ...], boundary: int, settings: ContextSettings) -> list[tuple[int, BlobHandle]]:
    """The offloaded results to clear: those of the old part and, in the kept turns, any result
    that alone is over the trigger (no prompt can hold it whole: the model reads it in slices)."""
    names = _tool_names(messages)
    found = []
    for i in range(_HEAD, len(messages)):
        m = messages[i]
        if m.role != "tool" or m.blob is None or names.get(m.tool_call_id or "") in settings.exclude_tools:
            continue
        try:
            handle = BlobHandle.parse(m.blob)
        except BlobHandleInvalid:
            continue  # the invoker fails the call that resolves it: clearing it would hide that
        # A read-back the model just asked for is kept whatever its size (at most a 64 K-character
        # slice): cleared at once, the model could never see what it read.
        oversized = (
            handle.size // CHARS_PER_TOKEN > settings.trigger_tokens
            and names.get(m.tool_call_id or "") != READ_RESULT_TOOL
        )
        if i < boundary or oversized:
            found.append((i, handle))
    return found


def plan(messages: tuple[Message, ...], settings: ContextSettings, *, summarize: bool = True) -> CompactionPlan | None:
    """The compaction the prompt needs now, or None: under the trigger, or nothing old to shrink.
    `summarize=False`: clearing only (the summarization call failed)."""
    if not settings.on:
        return None
    before = prompt_tokens(messages)
    if before <= settings.trigger_tokens:
        return None
    boundary = _boundary(messages, settings.keep_turns)
    handles = _clearable(messages, boundary, settings)
    cleared = clear(messages, tuple(str(h) for _, h in handles))
    old = prompt_tokens(cleared[_HEAD:boundary])
    # A summary is worth its model call when the old part is still a real share of the budget,
    # and possible only when the old part is more than one message (a previous summary alone).
    wants_summary = summarize and settings.summarize and boundary - _HEAD > 1 and old >= settings.trigger_tokens // 4
    if not handles and not wants_summary:
        return None
    reason = f"prompt ~{before} tokens > trigger {settings.trigger_tokens}"
    return CompactionPlan(boundary, tuple(str(h) for _, h in handles), wants_summary, before, reason)


def clear(messages: tuple[Message, ...], handles: tuple[str, ...]) -> tuple[Message, ...]:
    """Each tool message whose blob is one of `handles`, cleared to a preview and a marker."""
    wanted = set(handles)
    out = []
    for m in messages:
        if m.role == "tool" and m.blob is not None and m.blob in wanted:
            m = replace(m, content=cleared_text(m, BlobHandle.parse(m.blob)), blob=None)
        out.append(m)
    return tuple(out)


def summary_request(messages: tuple[Message, ...], compaction: CompactionPlan) -> tuple[Message, ...]:
    """The summarization call's messages: its instructions and the old part as a transcript (old
    results cleared first, so the call is small and reads what the model itself could read)."""
    old = clear(messages, compaction.cleared)[_HEAD : compaction.boundary]
    return (Message("system", SUMMARIZER_SYSTEM_PROMPT), Message("user", render_transcript(old)))


def render_transcript(messages: tuple[Message, ...]) -> str:
    lines = []
    for m in messages:
        if m.content:
            lines.append(f"[{m.role}] {m.content}")
        for call in m.tool_calls:
            lines.append(f"[call {call.name}] {call.arguments_json}")
    return "\n".join(lines)


def apply(
    messages: tuple[Message, ...], boundary: int, cleared: tuple[str, ...], summary: str | None
) -> tuple[Message, ...]:
    """The messages after a compaction: old results cleared and, with a summary, the old part
    replaced by it. Total: a boundary out of range is clamped (evolve never raises)."""
    boundary = max(_HEAD, min(boundary, len(messages)))
    out = clear(messages, cleared)
    if summary is None:
        return out
    return (*out[:_HEAD], Message("user", SUMMARY_PREFIX + summary), *out[boundary:])
