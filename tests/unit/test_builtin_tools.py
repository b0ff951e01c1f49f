"""The tool executor's built-in tools in-process, on a SQLite bank file: the calculator, the lookup,
their descriptors, transfers applied once per key across host instances, and the timeout (the MCP
servers and the sandboxed hosts: tests/integration/test_tool_hosts.py)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from agentstream.processors.tool_executor.builtin import (
    LOOKUP_CORPUS,
    BuiltinToolHost,
    _apply_transfer,
    bank_stats,
    bank_transfers,
)
from agentstream.tooling import ToolHost, ToolResult


async def call(
    host: ToolHost, name: str, arguments: dict[str, Any], *, key: str = "k", timeout_s: float = 10.0
) -> ToolResult:
    return await host.call(name, arguments, idempotency_key=key, timeout_s=timeout_s)


@pytest.fixture
def builtin(tmp_path: Path) -> BuiltinToolHost:
    return BuiltinToolHost(tmp_path / "bank.sqlite")


@pytest.mark.parametrize(
    ("expression", "expected"),
    [("4200 + 3800 + 4500", "12500"), ("12500 / 4", "3125"), ("-(2 + 3) * 4", "-20"), ("7 // 2 % 3", "0"),
     ("2 ** 10", "1024"), ("1.5 * 3", "4.5"), ("10 / 4", "2.5"), ("-2 ** 2", "-4")],
)  # fmt: skip
async def test_calculator_evaluates_arithmetic(builtin: BuiltinToolHost, expression: str, expected: str) -> None:
    result = await call(builtin, "calculator", {"expression": expression})
    assert (result.content, result.is_error) == (expected, False)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [({"expression": "1 +"}, "invalid expression"), ({"expression": "1 / 0"}, "division by zero"),
     ({"expression": "7 % 0"}, "division by zero"), ({"expression": "9 ** 999999"}, "too large"),
     ({"expression": "__import__('os').system('true')"}, "unsupported syntax"),
     ({"expression": "x + 1"}, "unsupported syntax"), ({"expression": "True + 1"}, "unsupported literal"),
     ({"expression": "(-8) ** 0.5"}, "not a real number"), ({"expression": "1e308 * 10"}, "not a finite"),
     ({"expression": 42}, "must be a string"), ({}, "missing required"),
     ({"expression": "1", "extra": 1}, "unexpected argument")],
)  # fmt: skip
async def test_calculator_rejects_bad_input(builtin: BuiltinToolHost, arguments: dict[str, Any], message: str) -> None:
    result = await call(builtin, "calculator", arguments)
    assert result.is_error and message in result.content, result


async def test_lookup_answers_known_topics_and_lists_them_otherwise(builtin: BuiltinToolHost) -> None:
    result = await call(builtin, "lookup", {"topic": "  KRaft "})
    assert not result.is_error and "Raft" in result.content
    unknown = await call(builtin, "lookup", {"topic": "zookeeper"})
    assert unknown.is_error and all(topic in unknown.content for topic in LOOKUP_CORPUS)
    assert (await call(builtin, "lookup", {"topic": None})).is_error


async def test_descriptors_describe_the_builtin_tools(builtin: BuiltinToolHost) -> None:
    by_name = {d.spec.name: d for d in builtin.descriptors()}
    assert set(by_name) == {"calculator", "lookup", "transfer_funds", "sleep_ms"}
    assert by_name["transfer_funds"].risk == "irreversible" and by_name["transfer_funds"].idempotent
    assert by_name["calculator"].risk == "read_only"
    assert by_name["transfer_funds"].spec.input_schema["properties"]["amount_cents"]["minimum"] == 1


async def test_transfer_with_the_same_key_applies_once_and_repeats_the_confirmation(
    builtin: BuiltinToolHost,
) -> None:
    args = {"to_account": "ACC-1", "amount_cents": 3125, "memo": "dinner"}
    first = await call(builtin, "transfer_funds", args, key="run1:3:0")
    second = await call(builtin, "transfer_funds", args, key="run1:3:0")
    assert not first.is_error and first.content == second.content and "3125" in first.content
    other = await call(builtin, "transfer_funds", {**args, "memo": "tip"}, key="run1:4:0")
    assert not other.is_error and other.content != first.content
    assert bank_stats(builtin.bank_path) == {
        "applied": 2, "attempts": 3, "deduplicated": 1, "keys_applied_more_than_once": 0,
    }  # fmt: skip
    rows = bank_transfers(builtin.bank_path)
    assert [(r["idempotency_key"], r["amount_cents"], r["memo"]) for r in rows] == [
        ("run1:3:0", 3125, "dinner"),
        ("run1:4:0", 3125, "tip"),
    ]
    assert rows[0]["transfer_id"] in first.content


def test_hosts_opening_a_new_bank_at_once_all_get_in(tmp_path: Path) -> None:
    # Switching a fresh SQLite file to WAL fails with "database is locked" at once, without the
    # busy timeout, when another connection opens it at the same moment (a CI flake once).
    failures: list[str] = []

    def transfer(bank: Path) -> None:
        try:
            result = _apply_transfer(bank, "same", "ACC-2", 100, "")
        except Exception as exc:
            failures.append(repr(exc))
            return
        if result.is_error:
            failures.append(result.content)

    for trial in range(40):
        bank = tmp_path / f"bank{trial}.sqlite"
        threads = [threading.Thread(target=transfer, args=(bank,)) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert bank_stats(bank)["applied"] == 1
    assert failures == []


async def test_transfer_dedupes_across_host_instances_sharing_the_bank(tmp_path: Path) -> None:
    bank = tmp_path / "shared" / "bank.sqlite"
    hosts = [BuiltinToolHost(bank), BuiltinToolHost(bank)]
    args = {"to_account": "ACC-2", "amount_cents": 100, "memo": ""}
    results = await asyncio.gather(*(call(hosts[i % 2], "transfer_funds", args, key="same") for i in range(10)))
    assert len({r.content for r in results}) == 1 and not any(r.is_error for r in results)
    # A new instance, as after a process restart, sees the same durable state.
    again = await call(BuiltinToolHost(bank), "transfer_funds", args, key="same")
    assert again.content == results[0].content
    stats = bank_stats(bank)
    assert stats == {"applied": 1, "attempts": 11, "deduplicated": 10, "keys_applied_more_than_once": 0}


async def test_transfer_refuses_bad_arguments_and_key_reuse_for_another_transfer(builtin: BuiltinToolHost) -> None:
    good = {"to_account": "ACC-3", "amount_cents": 500, "memo": "m"}
    for bad in [{**good, "amount_cents": "500"}, {**good, "amount_cents": 0}, {**good, "amount_cents": True},
                {**good, "to_account": ""}, {**good, "memo": 7}, {"to_account": "ACC-3", "amount_cents": 5}]:  # fmt: skip
        assert (await call(builtin, "transfer_funds", bad, key="bad")).is_error, bad
    assert (await call(builtin, "transfer_funds", good, key="")).is_error
    assert not (await call(builtin, "transfer_funds", good, key="k1")).is_error
    reused = await call(builtin, "transfer_funds", {**good, "amount_cents": 501}, key="k1")
    assert reused.is_error and "different transfer" in reused.content
    assert bank_stats(builtin.bank_path)["applied"] == 1


async def test_sleep_ms_and_the_builtin_timeout(builtin: BuiltinToolHost) -> None:
    assert (await call(builtin, "sleep_ms", {"ms": 5})).content == "slept 5 ms"
    timed_out = await call(builtin, "sleep_ms", {"ms": 2_000}, timeout_s=0.05)
    assert timed_out.is_error and "timed out" in timed_out.content
    assert (await call(builtin, "sleep_ms", {"ms": 10_001})).is_error
    assert (await call(builtin, "no_such_tool", {})).is_error
