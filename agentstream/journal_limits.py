"""How large a journal record may be, and the caps on what a model or a tool puts in one.

A record the journal refuses is never acknowledged, and the shell writes unacknowledged records
again until the broker takes them (agentstream/kafka/runtime_io.py): a record that is too large
would stall its processor for good. So every payload whose size a model, a tool or a tenant
controls is capped before it becomes an event, at a limit derived from the journal's own.

The journal's limit is a budget of 1,000,000 bytes per record by default
(AGENTSTREAM_JOURNAL_RECORD_BUDGET_BYTES), below both the producer's `message.max.bytes` and the
journal topic's `max.message.bytes` (8 MiB each, see `producer_config` and topics.yaml), which cap
it. The 8 MiB is there for the state changelogs, whose values hold a run's whole conversation: a
run is stopped once its next model request would pass the budget (`context_too_large`), by which
point its state can be about twice the budget. So an operator may raise the budget (a deployment
that keeps whole conversations inline, as bench/context.py's "off" mode) up to 4 MiB, not further.
"""

from __future__ import annotations

from functools import cache

from agentstream.kafka.producer import producer_config
from agentstream.settings import ResourceSettings, once
from agentstream.topics import load_topics

# librdkafka's default `message.max.bytes`, which applies when producer_config leaves it unset.
LIBRDKAFKA_MESSAGE_MAX_BYTES = 1_000_000
# Room for everything in a record besides the capped payload: the event's other fields (ids, names,
# counts), its Avro framing, the record key and the headers (type, signature, run proof).
ENVELOPE_HEADROOM_BYTES = 64 * 1024


# The `error_type` of a model answer over `model_output_limit()` (the cost governor charges it at
# what was reserved).
RESPONSE_TOO_LARGE = "response_too_large"
# A tool's result is cut to this many characters in its ToolCallCompleted (at most 4 bytes each).
TOOL_RESULT_LIMIT_CHARS = 64_000


# Computed on first use, not at import: the topics file is read where the settings name it, and
# importing a processor module (the registry's test, `--help`) reads no file.
@cache
def journal_record_limit() -> int:
    """The largest record (key, value and headers) a processor writes to the journal."""
    producer = int(producer_config("").get("message.max.bytes", LIBRDKAFKA_MESSAGE_MAX_BYTES))
    topic = load_topics("")["runs.journal"].config.get("max.message.bytes")
    budget = once(ResourceSettings).journal_record_budget_bytes
    return min(budget, producer, int(topic) if topic is not None else producer)


@cache
def model_output_limit() -> int:
    """What one model answer may carry into its LlmCallCompleted (its text and tool calls, UTF-8),
    and the cap on a non-streamed provider response body (a body is at least as large as what it
    carries). An answer over it is a terminal `response_too_large` failure: the same call would
    answer as much again."""
    limit = journal_record_limit() - ENVELOPE_HEADROOM_BYTES
    if limit < 4 * TOOL_RESULT_LIMIT_CHARS:
        raise ValueError(f"a tool result of {TOOL_RESULT_LIMIT_CHARS} characters may not fit a journal record "
                         f"of {journal_record_limit()} bytes (topics.yaml's runs.journal max.message.bytes)")  # fmt: skip
    return limit


def utf8_size_over(limit: int, *texts: str) -> int | None:
    """The UTF-8 size of `texts` together if it is over `limit`, else None. Cheap in the common
    case: an ASCII string's size is its length (known without a scan) and any string's is at most
    four bytes a character, so only a long non-ASCII text is ever encoded."""
    bound = 0
    for text in texts:  # a plain loop: a generator and sum() cost twice as much per model call
        bound += len(text) if text.isascii() else 4 * len(text)
    if bound <= limit:
        return None
    size = sum(len(t) if t.isascii() else len(t.encode()) for t in texts)
    return size if size > limit else None
