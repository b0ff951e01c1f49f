"""The audit views: DuckDB views over `events`, the journal's one sparse table (a row per journal
event, `event_type` naming it, every event type's fields as columns, `journal_time` its append
time). A column appears in the table only once an event carrying it lands, so every column a view
reads is listed in `EVENT_COLUMNS` and added as NULLs when the table lacks it: each view works on
a fresh table, and a missing column never breaks another view.

Terminal events of a run: RunCompleted, RunFailed, RunCancelled, RunHalted (a halted run that was
resumed later ends with its last one)."""

from __future__ import annotations

import pyarrow as pa  # type: ignore[import-untyped]

S, I32, I64, F64, BOOL = pa.string(), pa.int32(), pa.int64(), pa.float64(), pa.bool_()
TS = pa.timestamp("us", tz="UTC")

# Every column of `events` a view reads, with the type the converter gives it (schemas/*.avsc).
EVENT_COLUMNS: dict[str, pa.DataType] = {
    "event_id": S, "event_type": S, "run_id": S, "tenant_id": S, "journal_time": TS,
    "task": S, "model": S, "steps": I32, "reason": S, "error_type": S, "step": I32, "call_id": S,
    "tier": S, "provider": S, "input_tokens": I64, "output_tokens": I64, "cached_input_tokens": I64,
    "latency_ms": F64, "attempts": I32, "finish_reason": S, "message": S, "final": BOOL,
    "tool": S, "tool_version": S, "tool_call_id": S, "decision": S, "rule": S, "authorized_by": S,
    "is_error": BOOL, "duration_ms": F64, "approval_id": S, "approved": BOOL, "decided_by": S,
    "requested_ms": I64, "decided_ms": I64, "kind": S, "cost_usd": F64, "released_usd": F64,
    "price_version": S, "signature": S, "count": I32, "action": S, "evidence_json": S, "purpose": S,
    "compaction": I32, "boundary": I32, "cleared_json": S, "summary": S, "summary_call_id": S,
    "tokens_before": I32, "tokens_after": I32, "check_name": S, "severity": S, "checks_version": S,
}  # fmt: skip

_TERMINAL = "('RunCompleted', 'RunFailed', 'RunCancelled', 'RunHalted')"


# A call's risk tier, from the journal alone: the policy's decision or the approval request carry it;
# a call the policy allowed outright carries only its rule (`auto_approve`: an irreversible tool the
# tenant's policy approves; `tier`: its reason ends "<tool> is read-only" or "is reversible").
_TIER = """coalesce(p.tier, q.tier, CASE WHEN a.rule = 'auto_approve' THEN 'irreversible'
                                     WHEN a.rule = 'tier' AND a.reason LIKE '% is read-only' THEN 'read_only'
                                     WHEN a.rule = 'tier' AND a.reason LIKE '% is reversible' THEN 'reversible' END)"""


def _of(event_type: str) -> str:
    return f"(SELECT * FROM events WHERE event_type = '{event_type}')"


# Name -> (definition, what a row is). In dependency order: only `events` is read, views never read
# each other, so a query registers exactly the views it names.
VIEWS: dict[str, tuple[str, str]] = {
    "runs": (
        f"""
        SELECT run_id, any_value(tenant_id) AS tenant_id,
               any_value(task) FILTER (WHERE event_type = 'RunRequested') AS task,
               any_value(model) FILTER (WHERE event_type = 'RunRequested') AS model,
               lower(replace(arg_max(event_type, journal_time) FILTER (WHERE event_type IN {_TERMINAL}),
                             'Run', '')) AS status,
               arg_max(event_type, journal_time) FILTER (WHERE event_type IN {_TERMINAL}) AS terminal_event,
               arg_max(reason, journal_time) FILTER (WHERE event_type IN {_TERMINAL}) AS terminal_reason,
               min(journal_time) AS started_at,
               max(journal_time) FILTER (WHERE event_type IN {_TERMINAL}) AS ended_at,
               arg_max(steps, journal_time) FILTER (WHERE event_type IN {_TERMINAL}) AS steps,
               count(*) FILTER (WHERE event_type = 'LlmCallRequested') AS model_calls,
               count(*) FILTER (WHERE event_type = 'ToolCallRequested') AS tool_calls,
               coalesce(sum(cost_usd) FILTER (WHERE event_type = 'BudgetSettled'), 0) AS cost_usd,
               count(*) AS events
        FROM events WHERE run_id IS NOT NULL GROUP BY run_id
        """,
        "one row per run: status is completed/failed/cancelled/halted from its last terminal event, NULL while it runs",
    ),
    "model_calls": (
        f"""
        SELECT r.call_id, r.run_id, r.tenant_id, r.step, r.model AS requested_model, r.tier,
               coalesce(r.purpose, 'step') AS purpose,
               c.provider, c.model, c.input_tokens, c.output_tokens, c.cached_input_tokens, c.latency_ms,
               c.attempts, c.finish_reason, f.error_type, f.error, coalesce(f.failures, 0) AS failures,
               CASE WHEN c.call_id IS NOT NULL THEN 'completed' WHEN f.final THEN 'failed' ELSE 'pending' END
                   AS status,
               r.journal_time AS requested_at, coalesce(c.journal_time, f.failed_at) AS ended_at
        FROM {_of("LlmCallRequested")} r
        LEFT JOIN {_of("LlmCallCompleted")} c ON c.run_id = r.run_id AND c.call_id = r.call_id
        LEFT JOIN (SELECT run_id, call_id, arg_max(error_type, journal_time) AS error_type,
                          arg_max(message, journal_time) AS error, bool_or(final) AS final, count(*) AS failures,
                          max(journal_time) AS failed_at
                   FROM {_of("LlmCallFailed")} GROUP BY run_id, call_id) f
               ON f.run_id = r.run_id AND f.call_id = r.call_id
        """,
        "one row per model call (LlmCallRequested joined with its LlmCallCompleted or LlmCallFailed by call_id); "
        "purpose: step (the run's own call) or compaction (a context compaction's summarization call)",
    ),
    "tool_calls": (
        f"""
        SELECT r.call_id, r.run_id, r.tenant_id, r.step, r.tool,
               coalesce(p.tool_version, a.tool_version, r.tool_version) AS tool_version,
               {_TIER} AS tier, {_TIER} = 'irreversible' AS irreversible,
               coalesce(p.decision, CASE WHEN a.call_id IS NOT NULL THEN 'allow' END) AS policy_decision,
               coalesce(p.rule, a.rule) AS policy_rule, a.authorized_by,
               d.approved, coalesce(d.decided_by, CASE WHEN a.rule = 'auto_approve'
                                                       THEN 'tenant policy (auto_approve)' END) AS approver,
               c.is_error, c.duration_ms,
               CASE WHEN c.call_id IS NOT NULL THEN 'completed' WHEN p.decision = 'deny' OR d.approved = false
                    THEN 'denied' ELSE 'pending' END AS status,
               r.journal_time AS requested_at, c.journal_time AS completed_at
        FROM {_of("ToolCallRequested")} r
        LEFT JOIN {_of("PolicyDecided")} p ON p.run_id = r.run_id AND p.call_id = r.call_id
        LEFT JOIN {_of("ApprovalRequested")} q ON q.run_id = r.run_id AND q.call_id = r.call_id
        LEFT JOIN {_of("ApprovalDecided")} d ON d.run_id = r.run_id AND d.call_id = r.call_id
        LEFT JOIN {_of("ToolCallAuthorized")} a ON a.run_id = r.run_id AND a.call_id = r.call_id
        LEFT JOIN {_of("ToolCallCompleted")} c ON c.run_id = r.run_id AND c.call_id = r.call_id
        """,
        "one row per tool call: its risk tier, the policy's decision, who authorized and who approved it, its outcome",
    ),
    "approvals": (
        f"""
        SELECT q.approval_id, q.call_id, q.run_id, q.tenant_id, q.tool, q.tier, q.reason AS requested_reason,
               d.approved, d.decided_by AS approver, d.reason AS decision_reason,
               CASE WHEN d.approved THEN 'approved' WHEN d.approved = false THEN 'rejected' ELSE 'pending' END
                   AS decision,
               q.journal_time AS requested_at, d.journal_time AS decided_at
        FROM {_of("ApprovalRequested")} q
        LEFT JOIN {_of("ApprovalDecided")} d ON d.run_id = q.run_id AND d.approval_id = q.approval_id
        """,
        "one row per approval asked of a person, with its decision when there is one",
    ),
    "costs": (
        f"""
        SELECT event_id, run_id, tenant_id, call_id, step, kind, tool, model, cost_usd, released_usd,
               input_tokens, output_tokens, cached_input_tokens, price_version,
               journal_time AS settled_at, CAST(journal_time AS DATE) AS day
        FROM {_of("BudgetSettled")}
        """,
        "one row per settled call (BudgetSettled): its cost in USD; day is the UTC day it settled",
    ),
    "flags": (
        """
        SELECT event_id, run_id, tenant_id, step, event_type, coalesce(kind, check_name) AS kind,
               coalesce(action, severity) AS action, reason, signature, count, evidence_json,
               journal_time AS flagged_at
        FROM events WHERE event_type IN ('RunFlagged', 'LoopDetected', 'EvalVerdict')
        """,
        "one row per trajectory flag: RunFlagged (warn), LoopDetected (the loop detector's finding) or EvalVerdict "
        "(a failed step check: kind is the check, action its severity)",
    ),
    "compactions": (
        f"""
        SELECT event_id, run_id, tenant_id, step, compaction, kind, boundary,
               coalesce(json_array_length(cleared_json), 0) AS cleared_results, cleared_json,
               tokens_before, tokens_after, tokens_before - tokens_after AS tokens_saved,
               nullif(summary_call_id, '') AS summary_call_id, summary, reason, journal_time AS compacted_at
        FROM {_of("ContextCompacted")}
        """,
        "one row per context compaction (ContextCompacted): kind is clear (old tool results cleared) or summarize "
        "(and the old turns summarized by the model call summary_call_id); tokens as estimated",
    ),
}


def fill_missing(events: pa.Table) -> pa.Table:
    """`events` with every column a view reads, NULL where no event carrying it has landed yet."""
    for name, kind in EVENT_COLUMNS.items():
        if name not in events.column_names:
            events = events.append_column(pa.field(name, kind), pa.nulls(events.num_rows, kind))
    return events
