"""What bench/context.py measures of one mode's runs, from the journal alone (pure, no I/O).

- success: the run completed and its answer names every question's expected value;
- input tokens: the provider-reported usage of every model call of the run (LlmCallCompleted),
  summarization calls included; the peak is the largest single request;
- journal bytes: key + value of every journal record of the run (read raw by the driver);
- prefix cache: each run's provider requests, in journal order, through the replica emulator's KV
  cache model (`KvCache`): a request finds cached the longest prefix it shares with the previous
  request of its conversation (the step calls, or the summarization calls), as vLLM's prefix cache
  would, so a compaction that rewrites the prompt's head pays its prefill again.

A request is rebuilt from its LlmCallRequested: the tool schemas, then each message. An offloaded
result counts its blob's full size (the provider received it resolved) and is identified by its
handle, which names the content's sha256: two requests share it exactly when they share the text.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agentstream.blobs.errors import BlobHandleInvalid
from agentstream.blobs.handle import BlobHandle
from agentstream.doubles.replica_emulator.kvcache import KvCache
from agentstream.events import TERMINAL_TYPES, LlmCallCompleted, LlmCallRequested, RunCompleted, RunEvent, RunHalted
from agentstream.llm import Message, messages_from_json

ANSWER = re.compile(r"(\S+)[ \t]*=[ \t]*([^;\n]+)")
Segment = tuple[tuple[Any, ...], int]  # (what it is, its characters)


def answers(final_answer: str) -> dict[str, str]:
    """`ANSWERS: k1 = v1; k2 = v2` as a mapping (the faithful model's answer)."""
    _, _, tail = final_answer.partition("ANSWERS:")
    return {k: v.strip() for k, v in ANSWER.findall(tail)}


def _message_segment(m: Message) -> Segment:
    chars = len(m.content)
    what: Any = m.content
    if m.blob is not None:
        with contextlib.suppress(BlobHandleInvalid):  # a bad handle failed the call; count the preview
            chars = BlobHandle.parse(m.blob).size
        what = m.blob
    calls = tuple((c.name, c.arguments_json) for c in m.tool_calls)
    chars += sum(len(n) + len(a) for n, a in calls)
    return (m.role, what, calls, m.tool_call_id), chars


def request_segments(event: LlmCallRequested) -> list[Segment]:
    tools: Segment = (("tools", event.tools_json), len(event.tools_json))
    return [tools, *(_message_segment(m) for m in messages_from_json(event.messages_json))]


def shared_prefix_chars(before: list[Segment], now: list[Segment]) -> int:
    """Characters of `now` a cache still holds after serving `before` (and its answer, which the
    next request re-sends as the assistant message right after `before`'s messages)."""
    shared = 0
    for i, (what, chars) in enumerate(now):
        if i < len(before) and before[i][0] == what:
            shared += chars
        elif i == len(before) and what[0] == "assistant":
            shared += chars
            break
        else:
            break
    return shared


@dataclass
class PrefixCache:
    """One KV cache per run (unlimited capacity: what a request loses is only what its prompt changed)."""

    cached_tokens: int = 0
    prompt_tokens: int = 0
    _previous: dict[str, list[Segment]] = field(default_factory=dict)

    def run(self, requests: Iterable[LlmCallRequested]) -> None:
        cache = KvCache()
        self._previous = {}
        for event in requests:
            session = f"{event.run_id}/{getattr(event, 'purpose', 'step') or 'step'}"
            segments = request_segments(event)
            tokens = sum(c for _, c in segments) // 4
            if session in self._previous:
                # What the conversation's last request left resident, cut to what this one shares.
                keep = shared_prefix_chars(self._previous[session], segments) // 4
                cache.reserve(session, keep)
                cache.release(session, keep)
            cached = cache.admit(session, tokens, tokens)
            cache.release(session, tokens)
            self.cached_tokens += cached or 0
            self.prompt_tokens += tokens
            self._previous[session] = segments

    @property
    def hit_rate(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


@dataclass
class ModeTally:
    runs: int = 0
    succeeded: int = 0
    completed: int = 0
    input_tokens: int = 0
    peak_prompt_tokens: int = 0
    journal_bytes: int = 0
    model_calls: int = 0
    summarization_calls: int = 0
    compactions: int = 0
    steps: list[int] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    cache: PrefixCache = field(default_factory=PrefixCache)

    def add_run(self, events: list[RunEvent], expected: Mapping[str, str], journal_bytes: int) -> None:
        self.runs += 1
        self.journal_bytes += journal_bytes
        requests = [e for e in events if isinstance(e, LlmCallRequested)]
        self.model_calls += len(requests)
        summaries = sum(getattr(e, "purpose", "step") == "compaction" for e in requests)
        self.summarization_calls += summaries
        self.steps.append(len(requests) - summaries)
        self.compactions += sum(e.type_name == "ContextCompacted" for e in events)
        for e in events:
            if isinstance(e, LlmCallCompleted):
                self.input_tokens += e.input_tokens
                self.peak_prompt_tokens = max(self.peak_prompt_tokens, e.input_tokens)
        self.cache.run(requests)
        # The cost governor writes after the end; a halted run (loop, budget) is never resumed here.
        end = next((e for e in events if e.type_name in TERMINAL_TYPES), None)
        end = end or next((e for e in events if isinstance(e, RunHalted)), None)
        if isinstance(end, RunCompleted):
            self.completed += 1
            if answers(end.final_answer) == dict(expected):
                self.succeeded += 1
                return
            why = "wrong_answer"
        else:
            why = getattr(end, "error_type", None) or (end.type_name if end is not None else "lost")
            why = f"halted:{end.limit}" if isinstance(end, RunHalted) else why
        self.failures[why] = self.failures.get(why, 0) + 1

    def summary(self) -> dict[str, Any]:
        n = max(1, self.runs)
        return {
            "success_rate": round(self.succeeded / n, 4),
            "input_tokens_per_run": round(self.input_tokens / n),
            "peak_prompt_tokens": self.peak_prompt_tokens,
            "journal_bytes_per_run": round(self.journal_bytes / n),
            "prefix_cache_hit_rate": round(self.cache.hit_rate, 4),
            "runs": self.runs,
            "completed": self.completed,
            "failures": dict(sorted(self.failures.items())),
            "steps_per_run_min": min(self.steps, default=0),
            "steps_per_run_max": max(self.steps, default=0),
            "model_calls_per_run": round(self.model_calls / n, 2),
            "summarization_calls_per_run": round(self.summarization_calls / n, 2),
            "compactions_per_run": round(self.compactions / n, 2),
        }


def requirements(off: Mapping[str, Any], on: Mapping[str, Any]) -> dict[str, bool]:
    """Issue 17's requirements of the "on" mode against the "off" mode."""
    return {
        "same_success_rate": on["success_rate"] >= off["success_rate"],
        "input_tokens_halved": on["input_tokens_per_run"] <= 0.5 * off["input_tokens_per_run"],
        "peak_prompt_third": on["peak_prompt_tokens"] * 3 <= off["peak_prompt_tokens"],
        "journal_bytes_tenth": on["journal_bytes_per_run"] * 10 <= off["journal_bytes_per_run"],
    }
