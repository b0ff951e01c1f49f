"""The journal's limits on what a model answer or a tool result may carry follow the journal's own
record budget (oversized answers and results end to end: tests/e2e/test_oversized_results.py)."""

from __future__ import annotations

from agentstream.journal_limits import journal_record_limit, model_output_limit
from agentstream.processors.tool_executor.execute import MAX_RESULT_CHARS


def test_the_limits_follow_the_journal() -> None:
    assert journal_record_limit() == 1_000_000  # the journal budget, below the 8 MiB the producer and topics allow
    assert journal_record_limit() - 64 * 1024 == model_output_limit()
    assert model_output_limit() > 4 * MAX_RESULT_CHARS
