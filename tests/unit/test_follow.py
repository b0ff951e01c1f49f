"""What `agentstream run --follow` prints while a run waits for a person."""

from __future__ import annotations

import time

import pytest

from agentstream.cli.commands import EXIT_HALTED, _settled, print_followed
from agentstream.client.journal import JournalEntry
from agentstream.events import ApprovalRequested, RunHalted


def test_a_call_waiting_for_approval_prints_the_commands_that_decide_it(capsys: pytest.CaptureFixture[str]) -> None:
    ask = ApprovalRequested("r/c1/approval", "r", "t", step=2, call_id="r/c1", approval_id="apr-7f3a",
                            tool="transfer_funds", tool_version="1", tier="irreversible", arguments_json="{}",
                            reason="irreversible", requested_ms=0, expires_ms=0)  # fmt: skip
    print_followed(ask, time.monotonic())
    err = capsys.readouterr().err
    assert "transfer_funds waits for approval: agentstream approvals approve apr-7f3a" in err
    assert "agentstream approvals deny apr-7f3a" in err


def test_a_followed_run_that_halts_is_summarized_as_halted_with_the_resume_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    halt = RunHalted("r/halt/1", "r", "t", steps=3, halt=1, limit="loop", reason="same call", resumable=True)
    assert _settled([JournalEntry(halt, 0, 0)]) == EXIT_HALTED
    out = capsys.readouterr()
    assert "halted" in out.out and "loop: same call" in out.out
    assert "agentstream runs resume r" in out.err
