"""The journal's limits on what a model answer or a tool result may carry follow the journal's own
record budget (oversized answers and results end to end: tests/e2e/test_oversized_results.py)."""

from __future__ import annotations

import pytest

from agentstream.journal_limits import journal_record_limit, model_output_limit
from agentstream.processors.tool_executor.execute import MAX_RESULT_CHARS
from agentstream.settings import SettingsError, forget_loaded


def test_the_limits_follow_the_journal() -> None:
    assert journal_record_limit() == 1_000_000  # the journal budget, below the 8 MiB the producer and topics allow
    assert journal_record_limit() - 64 * 1024 == model_output_limit()
    assert model_output_limit() > 4 * MAX_RESULT_CHARS


def _fresh() -> None:
    forget_loaded()
    journal_record_limit.cache_clear()
    model_output_limit.cache_clear()


def test_the_budget_is_an_operator_setting_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """(A journal topic that allows less caps it: tests/unit/test_packaging.py.)"""
    try:
        monkeypatch.setenv("AGENTSTREAM_JOURNAL_RECORD_BUDGET_BYTES", str(4 * 1024 * 1024))
        _fresh()
        assert journal_record_limit() == 4 * 1024 * 1024
        assert model_output_limit() == 4 * 1024 * 1024 - 64 * 1024
        # Fixed for the process's life once used: every writer of one process agrees on it.
        monkeypatch.setenv("AGENTSTREAM_JOURNAL_RECORD_BUDGET_BYTES", "2000000")
        assert journal_record_limit() == 4 * 1024 * 1024
        # Past what a run's state record could hold: refused, naming the variable.
        monkeypatch.setenv("AGENTSTREAM_JOURNAL_RECORD_BUDGET_BYTES", str(8 * 1024 * 1024))
        _fresh()
        with pytest.raises(SettingsError, match="AGENTSTREAM_JOURNAL_RECORD_BUDGET_BYTES"):
            journal_record_limit()
    finally:
        monkeypatch.undo()
        _fresh()
    assert journal_record_limit() == 1_000_000
