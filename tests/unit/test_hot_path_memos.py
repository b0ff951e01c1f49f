"""The hot path's memos and caches, without a broker: each gives the answer a full parse, a fresh
validation or a read of the store would (the batch writes against a broker:
tests/integration/test_hot_path.py)."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest

from agentstream.kafka.changelog import ChangelogWriter
from agentstream.kafka.state import PartitionStore
from agentstream.llm import ConversationMemo, Message, ToolCall, ToolSpec, messages_from_json, messages_to_json
from agentstream.processors.orchestrator import validation
from agentstream.processors.orchestrator.validation import validate_call


def _turn(rng: random.Random) -> list[Message]:
    text = rng.choice(["plain", 'quote " and ]', "comma, [bracket", ""])
    call = ToolCall(f"c{rng.randrange(99)}", "t", '{"a": [1, "]"]}')
    return [
        Message("assistant", text, (call,)),
        Message("tool", "r", tool_call_id=call.id, is_error=rng.random() < 0.5),
    ]


def test_the_conversation_memo_always_equals_a_full_parse() -> None:
    rng = random.Random(7)
    memo = ConversationMemo(max_runs=3, max_chars=20_000)
    conversations = {f"run{i}": [Message("system", "s"), Message("user", "u, ]")] for i in range(6)}
    for _ in range(500):
        run = rng.choice(sorted(conversations))
        history = conversations[run]
        choice = rng.random()
        if choice < 0.1:
            history = history[:1]  # a different conversation under the same run id
        elif choice < 0.8:
            history = history + _turn(rng)[: rng.randint(0, 2)]
        conversations[run] = history
        raw = messages_to_json(history)
        assert memo.parse(run, raw) == messages_from_json(raw)
    assert len(memo._last) <= 3


def test_the_conversation_memo_rejects_what_a_full_parse_rejects() -> None:
    memo = ConversationMemo()
    first = messages_to_json([Message("user", "u")])
    memo.parse("r", first)
    broken = first[:-1] + ',{"role": "assistant"'
    with pytest.raises(orjson.JSONDecodeError):
        memo.parse("r", broken)
    with pytest.raises(orjson.JSONDecodeError):
        messages_from_json(broken)


def test_the_validation_memo_gives_a_fresh_validations_verdict() -> None:
    tools = {
        "calc": ToolSpec("calc", "", {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}),
        "big": ToolSpec("big", "", {"type": "object", "description": "d" * 5000}),
    }
    cases = [("calc", '{"x": 1}'), ("calc", '{"x": "1"}'), ("calc", "{}"), ("calc", "not json"),
             ("big", "{}"), ("calc", '{"x": ' + "1" * 3000 + "}"), ("nope", "{}")]  # fmt: skip
    for _ in range(2):  # the second round is served from the memo where it may be
        for name, arguments in cases:
            remembered = validate_call(ToolCall("i", name, arguments), tools)
            spec = tools.get(name)
            if spec is None:
                assert remembered is not None and "unknown tool" in remembered
                continue
            schema_json = orjson.dumps(spec.input_schema, option=orjson.OPT_SORT_KEYS).decode()
            assert remembered == validation._verdict(schema_json, name, arguments)
    assert validate_call(ToolCall("i", "calc", '{"x": 1}'), tools) is None
    assert "integer" in (validate_call(ToolCall("i", "calc", '{"x": "1"}'), tools) or "")


def test_a_cached_absence_never_hides_a_later_write(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p")
    assert store.get("done/c1") is None  # the absence is now cached
    assert not store.has_committed(b"done/c1")
    store.put("done/c1", 1)
    assert store.get("done/c1") == 1
    store.commit(1)
    assert store.get("done/c1") == 1 and store.has_committed(b"done/c1")
    store.delete("done/c1")
    store.commit(2)
    assert store.get("done/c1") is None and not store.has_committed(b"done/c1")
    store.write_raw({b"done/c1": b"3"}, 3)  # a restore writes under the cache
    assert store.get("done/c1") == 3
    store.close()


def test_the_changelog_skips_deleting_only_what_never_was(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p")
    writer = ChangelogWriter("cl")
    store.put("kept", 1)
    writer.stage(0, store, 1)
    store.commit(1)
    writer.flush()
    store.delete("never-written")  # an idempotent clean-up
    store.put("in-batch", 1)
    store.delete("in-batch")  # put and deleted within one batch
    store.delete("kept")  # a real deletion: the changelog must carry its tombstone
    writer.stage(0, store, 2)
    store.commit(2)
    flushed = {r.key: r.value for r in writer.flush()}
    assert flushed.pop(b"kept") is None
    assert set(flushed) == {b"\x00offset"}
    store.close()
