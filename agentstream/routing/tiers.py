"""Choosing a model tier for one step of a run.

Two tiers: `small` (cheap, fast) and `frontier` (most capable), and a third a run only gets by
asking: `judge`, for the runs that grade other runs (agentstream.judge), so a routes file can send
them to a model of their own. `choose_tier` is pure and
deterministic: the same step and conversation always give the same (tier, reason), with no
clock and no randomness, so a re-driven decision journals the same tier.

Rules, first match wins:

1. the requested model *is* a tier name ("small" / "frontier" / "judge"): that tier, as pinned by the run;
2. the first step (no assistant turn yet): `frontier`, the model plans the run;
3. the latest tool results include an error: `frontier`, recovering needs judgement;
4. the conversation is long (estimated above `LONG_CONTEXT_TOKENS`): `frontier`;
5. the latest user or tool text asks for hard reasoning (see `HARD_REASONING`): `frontier`;
6. the step follows successful tool results: `small`, a routine continuation;
7. anything else (e.g. a new user turn): `frontier`, the safe default.
"""

from __future__ import annotations

import re

from agentstream.llm import Message

SMALL = "small"
FRONTIER = "frontier"
TIERS = (SMALL, FRONTIER)
JUDGE = "judge"  # pinned by judge runs only: not a tier the routing rules below ever choose

# Above this estimated prompt size small models lose track of the context; 4 characters a token
# is the usual estimate for English text and JSON (the scripted model counts the same way).
LONG_CONTEXT_TOKENS = 12_000
_CHARS_PER_TOKEN = 4

HARD_REASONING = re.compile(
    r"\b(prove|proof|derive|step[- ]by[- ]step|think (?:carefully|hard)|reason (?:about|through)|"
    r"trade-?offs?|root cause|diagnose|optimi[sz]e|algorithm|complex(?:ity)?|ambiguous|contradict\w*)\b",
    re.IGNORECASE,
)


def estimate_tokens(messages: tuple[Message, ...]) -> int:
    """A cheap, deterministic prompt-size estimate: characters / 4, tool-call arguments included."""
    chars = 0
    for m in messages:
        chars += len(m.content)
        for call in m.tool_calls:
            chars += len(call.name) + len(call.arguments_json)
    return chars // _CHARS_PER_TOKEN


def _latest_tool_results(messages: tuple[Message, ...]) -> tuple[Message, ...]:
    """The tool messages ending the conversation (the observations this step answers); none when
    a user turn came after them."""
    tail: list[Message] = []
    for m in reversed(messages):
        if m.role != "tool":
            break
        tail.append(m)
    return tuple(reversed(tail))


def _latest_prompt_text(messages: tuple[Message, ...]) -> str:
    """The user and tool text since the last assistant turn."""
    parts: list[str] = []
    for m in reversed(messages):
        if m.role == "assistant":
            break
        if m.role in ("user", "tool"):
            parts.append(m.content)
    return "\n".join(reversed(parts))


def choose_tier(step: int, messages: tuple[Message, ...], requested_model: str) -> tuple[str, str]:
    """(tier, reason) for the model call of `step` (1-based) over `messages`."""
    if requested_model in TIERS or requested_model == JUDGE:
        return requested_model, f"tier {requested_model} requested by the run"
    if step <= 1 or not any(m.role == "assistant" for m in messages):
        return FRONTIER, "first step: planning"
    results = _latest_tool_results(messages)
    failed = sum(1 for m in results if m.is_error)
    if failed:
        return FRONTIER, f"after a tool error ({failed} of {len(results)} results failed)"
    tokens = estimate_tokens(messages)
    if tokens > LONG_CONTEXT_TOKENS:
        return FRONTIER, f"long context: ~{tokens} tokens > {LONG_CONTEXT_TOKENS}"
    hard = HARD_REASONING.search(_latest_prompt_text(messages))
    if hard is not None:
        return FRONTIER, f"hard reasoning: mentions {hard.group(0).lower()!r}"
    if results:
        return SMALL, f"routine step after {len(results)} successful tool result(s)"
    return FRONTIER, "no tool results to follow up: new instructions"
