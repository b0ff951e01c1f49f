"""The scripted model server: a fake LLM provider that replays scenario files over the real
OpenAI Chat Completions and Anthropic Messages wire protocols.

It exists so the real provider adapters are exercised over real HTTP (streaming, tool calls,
retries) without a paid model, and so benchmarks have a deterministic, countable model.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import itertools
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson

from agentstream.doubles.scripted_model.anthropic_wire import ANTHROPIC
from agentstream.doubles.scripted_model.faithful import (
    SUMMARIZE_LINE,
    faithful_turn,
    read_prompt,
    reply_index,
    summary,
)
from agentstream.doubles.scripted_model.http import HttpReply, HttpRequest
from agentstream.doubles.scripted_model.judge import is_judge_task, scripted_grade
from agentstream.doubles.scripted_model.openai_wire import OPENAI
from agentstream.doubles.scripted_model.scenarios import (
    Scenario,
    ScriptedToolCall,
    Turn,
    load_scenarios,
    parse_scenario,
)
from agentstream.doubles.scripted_model.wire import (
    BadRequest,
    Conversation,
    Reply,
    WireProtocol,
    approx_tokens,
    output_chars,
)


def _json(obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> HttpReply:
    return HttpReply(status, orjson.dumps(obj), headers=headers or {})


# -- compromised-model mode (a scenario's `obey_tool_output`) ------------------------------------

INSTRUCTION_LINE = re.compile(r"^[ \t]*INSTRUCTION:[ \t]*(\{.*\})[ \t]*$", re.MULTILINE)
# `{{copy:REGEX}}` in an instruction's string argument: the model copies what it read. The attacker
# knows the shape of the data (an account number), not its value; the model fills it in from the
# first match of REGEX in the conversation's tool results (its groups joined, when it has groups;
# `|pct` percent-encodes every byte of it). REGEX may not contain `}}`.
COPY = re.compile(r"\{\{copy:(.+?)(\|pct)?\}\}")


def _block_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(b.get("text", "")) for b in content if isinstance(b, Mapping) and b.get("type") == "text")
    return ""


def _tool_result_text(message: Any) -> str | None:
    """The text of a tool-result message (OpenAI `role: tool`, or an Anthropic user message made of
    `tool_result` blocks); None for any other message."""
    if not isinstance(message, Mapping):
        return None
    if message.get("role") == "tool":
        return _block_text(message.get("content"))
    content = message.get("content")
    if message.get("role") == "user" and isinstance(content, list):
        results = [b for b in content if isinstance(b, Mapping) and b.get("type") == "tool_result"]
        if results:
            return "\n".join(_block_text(b.get("content")) for b in results)
    return None


def _copied(value: Any, read: str) -> Any:
    """`value` with its `{{copy:...}}` placeholders filled from `read` (unmatched ones: empty)."""
    if isinstance(value, dict):
        return {k: _copied(v, read) for k, v in value.items()}
    if isinstance(value, list):
        return [_copied(v, read) for v in value]
    if not isinstance(value, str):
        return value

    def fill(placeholder: re.Match[str]) -> str:
        try:
            found = re.search(placeholder.group(1), read)
        except re.error:
            return ""
        if found is None:
            return ""
        text = "".join(g or "" for g in found.groups()) if found.groups() else found.group(0)
        return "".join(f"%{b:02X}" for b in text.encode()) if placeholder.group(2) else text

    return COPY.sub(fill, value)


def injected_call(text: str, read: str = "") -> ScriptedToolCall | None:
    """The first well-formed `INSTRUCTION: {"tool": name, "arguments": {...}}` line in `text`;
    `read`: every tool result of the conversation, which `{{copy:...}}` placeholders copy from."""
    for match in INSTRUCTION_LINE.finditer(text):
        try:
            d = orjson.loads(match.group(1))
        except orjson.JSONDecodeError:
            continue
        if isinstance(d, dict) and isinstance(d.get("tool"), str) and d["tool"]:
            args = d.get("arguments", {})
            if isinstance(args, dict):
                return ScriptedToolCall(name=d["tool"], arguments=_copied(args, read))
    return None


def compromised_turn(body: Mapping[str, Any]) -> tuple[Turn | None, int]:
    """(the call to obey now, if the last message is a tool result carrying an instruction; how
    many earlier assistant turns were obeyed instructions rather than scripted turns). A tool
    result's instruction counts as obeyed when the next message is an assistant message, so each
    instruction is obeyed once, by the answer to the tool message that carried it."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None, 0
    obeyed = 0
    for message, following in itertools.pairwise(messages):
        text = _tool_result_text(message)
        if text is not None and isinstance(following, Mapping) and following.get("role") == "assistant":
            obeyed += injected_call(text) is not None
    last = _tool_result_text(messages[-1])
    read = "\n".join(t for t in map(_tool_result_text, messages) if t is not None)
    call = injected_call(last, read) if last is not None else None
    return (Turn(tool_calls=(call,)) if call is not None else None), obeyed


# The model invoker's Idempotency-Key for a run's step call (agentstream.ids.llm_call_id).
STEP_CALL_KEY = re.compile(r"/s(\d+)/llm$")


def turn_index(key: str, assistant_turns: int) -> int:
    """The scripted turn a request plays: its step - 1 when the key names a step call (a context
    compaction removes old assistant messages, so counting them would replay earlier turns), else
    the assistant messages in its prompt (the same number in any uncompacted run)."""
    step = STEP_CALL_KEY.search(key)
    return int(step.group(1)) - 1 if step else assistant_turns


class ScriptedModelServer:
    """Holds the scenarios and the request counters; `handle` answers one HTTP request (served
    by `agentstream.doubles.scripted_model.http`).

    Requests are answered synchronously on one event loop (a scripted delay holds the reply back,
    not the counting), so stats are exact under any number of concurrent requests without a lock.
    """

    def __init__(
        self,
        scenario_dirs: Iterable[str | Path] = (),
        default: str = "demo",
        *,
        bundled: bool = True,
        scenarios: Iterable[Mapping[str, Any]] = (),
        keep_requests: int = 0,
    ) -> None:
        self._scenarios: dict[str, Scenario] = load_scenarios(scenario_dirs, bundled=bundled)
        # The last `keep_requests` model requests as received (headers and body): what a client
        # really put on the wire, for tests of the adapters.
        self.received: collections.deque[HttpRequest] = collections.deque(maxlen=keep_requests)
        for d in scenarios:
            self.add_scenario(d)
        self.default = default
        self._total = 0
        self._by_protocol: Counter[str] = Counter()
        self._by_status: Counter[int] = Counter()
        self._calls: dict[str, list[int]] = {}
        self._routes: dict[tuple[str, str], Callable[[HttpRequest], HttpReply]] = {
            ("POST", "/v1/chat/completions"): self._openai,
            ("POST", "/v1/messages"): self._anthropic,
            ("GET", "/_scripted/stats"): self._stats,
            ("POST", "/_scripted/reset"): self._reset,
            ("GET", "/_scripted/scenarios"): self._list_scenarios,
            ("POST", "/_scripted/scenarios"): self._add_scenario,
        }
        self._paths = {path for _, path in self._routes}

    # -- programmatic API -------------------------------------------------------------------

    def add_scenario(self, scenario: Mapping[str, Any]) -> Scenario:
        parsed = parse_scenario(scenario)
        self._scenarios[parsed.name] = parsed
        return parsed

    @property
    def scenario_names(self) -> list[str]:
        return sorted(self._scenarios)

    def stats(self) -> dict[str, Any]:
        return {
            "total_requests": self._total,
            "by_protocol": dict(self._by_protocol),
            "by_status": {str(k): v for k, v in sorted(self._by_status.items())},
            "calls": {k: list(v) for k, v in self._calls.items()},
        }

    def reset(self) -> None:
        self._total = 0
        self._by_protocol.clear()
        self._by_status.clear()
        self._calls.clear()

    # -- HTTP handlers ----------------------------------------------------------------------

    def handle(self, request: HttpRequest) -> HttpReply:
        route = self._routes.get((request.method, request.path))
        if route is not None:
            return route(request)
        if request.path in self._paths:
            return _json({"error": f"method {request.method} not allowed"}, 405)
        return _json({"error": f"not found: {request.path} (this is the scripted model server, a fake)"}, 404)

    def _openai(self, request: HttpRequest) -> HttpReply:
        return self._handle(request, OPENAI)

    def _anthropic(self, request: HttpRequest) -> HttpReply:
        return self._handle(request, ANTHROPIC)

    def _stats(self, request: HttpRequest) -> HttpReply:
        return _json(self.stats())

    def _reset(self, request: HttpRequest) -> HttpReply:
        self.reset()
        return _json({"ok": True})

    def _list_scenarios(self, request: HttpRequest) -> HttpReply:
        return _json({"default": self.default, "scenarios": self.scenario_names})

    def _add_scenario(self, request: HttpRequest) -> HttpReply:
        try:
            parsed = self.add_scenario(orjson.loads(request.body))
        except (orjson.JSONDecodeError, ValueError) as exc:
            return _json({"error": str(exc)}, 400)
        return _json({"ok": True, "name": parsed.name})

    def _handle(self, request: HttpRequest, proto: WireProtocol) -> HttpReply:
        received_ms = time.time_ns() // 1_000_000
        if self.received.maxlen:
            self.received.append(request)
        raw = request.body
        key = request.headers.get("idempotency-key") or "body-" + hashlib.sha256(raw).hexdigest()[:24]
        # Counted on arrival, before any scripted delay, so concurrent requests never lose a count.
        self._total += 1
        self._by_protocol[proto.name] += 1
        receipts = self._calls.setdefault(key, [])
        receipts.append(received_ms)
        attempt = len(receipts)

        try:
            body = orjson.loads(raw)
            if not isinstance(body, dict):
                raise BadRequest("request body must be a JSON object")
            if not isinstance(body.get("model"), str) or not body["model"]:
                raise BadRequest("'model' is required")
            conv = proto.conversation(body)
        except (orjson.JSONDecodeError, BadRequest) as exc:
            return self._error(proto, 400, f"invalid request: {exc}")
        prompt = read_prompt(body, proto.name)
        if prompt.system.startswith(SUMMARIZE_LINE):
            # A context compaction's summarization call, whatever the scenario (its transcript
            # carries no scenario marker): answered like a faithful summarizer, no turn played.
            conv = dataclasses.replace(conv, assistant_turns=reply_index(key))
            return self._answer(proto, body, conv, Turn(text=summary(prompt)), key, attempt, received_ms)
        if is_judge_task(prompt.task):
            conv = dataclasses.replace(conv, assistant_turns=reply_index(key))
            return self._answer(proto, body, conv, Turn(text=scripted_grade(prompt.task)), key, attempt, received_ms)
        name = conv.scenario or self.default
        scenario = self._scenarios.get(name)
        if scenario is None:
            known = ", ".join(self.scenario_names)
            return self._error(proto, 400, f"unknown scenario {name!r} (known: {known})")

        conv = dataclasses.replace(conv, assistant_turns=turn_index(key, conv.assistant_turns))
        turn = scenario.turn(conv.assistant_turns)
        if scenario.obey_tool_output:
            obey, obeyed_before = compromised_turn(body)
            turn = obey if obey is not None else scenario.turn(conv.assistant_turns - obeyed_before)
        if scenario.faithful:
            turn = faithful_turn(prompt)
            conv = dataclasses.replace(conv, assistant_turns=reply_index(key))
        reply = self._answer(proto, body, conv, turn, key, attempt, received_ms)
        reply.delay_s = turn.delay_ms / 1000
        return reply

    def _answer(
        self,
        proto: WireProtocol,
        body: dict[str, Any],
        conv: Conversation,
        turn: Turn,
        key: str,
        attempt: int,
        received_ms: int,
    ) -> HttpReply:
        failure = turn.failure_for_attempt(attempt)
        if failure is not None:
            headers = {} if failure.retry_after is None else {"retry-after": f"{failure.retry_after:g}"}
            message = f"scripted failure: attempt {attempt} of call {key} answers {failure.status}"
            return self._error(proto, failure.status, message, headers)

        input_tokens = approx_tokens(conv.prompt_chars)
        reply = Reply(
            model=body["model"],
            turn_index=conv.assistant_turns,
            turn=turn,
            reply_id=proto.id_prefix + hashlib.sha1(f"{key}:{attempt}".encode()).hexdigest()[:24],
            created=received_ms // 1000,
            input_tokens=input_tokens,
            cached_tokens=min(input_tokens, approx_tokens(conv.cached_chars, minimum=0)),
            output_tokens=approx_tokens(output_chars(turn)),
        )
        self._by_status[200] += 1
        headers = {proto.request_id_header: reply.reply_id}
        if turn.corrupt_response:
            # Cut mid-object, as a proxy that drops the connection's tail would leave it.
            if body.get("stream"):
                return HttpReply(200, content_type="text/event-stream", frames=[b'data: {"id": "cut', b"\n\n"])
            return HttpReply(200, b'{"id": "cut", "choices": [', headers=headers)
        if body.get("stream"):
            frames = proto.reply_frames(reply, proto.wants_usage_chunk(body))
            return HttpReply(200, content_type="text/event-stream", headers=headers, frames=frames)
        return _json(proto.reply_body(reply), headers=headers)

    def _error(
        self, proto: WireProtocol, status: int, message: str, headers: Mapping[str, str] | None = None
    ) -> HttpReply:
        self._by_status[status] += 1
        return _json(proto.error_body(status, message), status, headers)
