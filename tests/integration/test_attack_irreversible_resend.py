"""Finding 11 of issue 13: a server's retry policy came from whichever of its tools started it.

A real MCP stdio server (bench/fixtures/drop_mcp_server.py) with a read-only tool and an
irreversible, non-idempotent one. The read-only tool starts the server; then the irreversible tool
records its side effect in a file and the server drops the connection (the process exits) before
replying. The call must not be sent again: its effect ran exactly once and its result is the
"may have run; not retried" observation. A read-only call on a dropped connection is still retried
(its own policy), and a tool's timeout is its own, not the starter's."""

from __future__ import annotations

from pathlib import Path

from bench.attacks.loops import NOT_RETRIED, irreversible_resend, read_only_retry_lost, timeout_from_starter


async def test_an_irreversible_call_on_a_dropped_connection_is_not_resent(tmp_path: Path) -> None:
    succeeded, result, ran = await irreversible_resend(tmp_path)
    assert ran == 1, f"the payment ran {ran} times: {result}"
    assert result.is_error and NOT_RETRIED in result.content, result
    assert "pay" in result.content and "irreversible" in result.content, result
    assert not succeeded


async def test_a_read_only_call_on_a_dropped_connection_is_still_retried(tmp_path: Path) -> None:
    lost, result, ran = await read_only_retry_lost(tmp_path)
    assert ran == 2 and not result.is_error and result.content == "found q1", (ran, result)
    assert not lost


async def test_a_call_gets_its_own_timeout_not_the_starters(tmp_path: Path) -> None:
    assert not await timeout_from_starter(tmp_path)


async def test_the_control_without_the_rule_resends_the_payment(tmp_path: Path) -> None:
    """The bench's control: under the starter's policy (the old behaviour) the attack succeeds."""
    succeeded, _result, ran = await irreversible_resend(tmp_path, defended=False)
    assert succeeded and ran == 2
