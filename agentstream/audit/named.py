"""The questions people ask of the audit warehouse, as named queries over the views
(`agentstream audit sql --named NAME [--param k=v]`). Parameters are typed and rendered as SQL
literals (integers checked, strings quoted), so a parameter is a value and never SQL."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agentstream.audit.errors import AuditQueryError


@dataclass(frozen=True)
class NamedQuery:
    doc: str
    sql: str  # with {name} placeholders, one per parameter
    params: Mapping[str, int | str | None]  # name -> default (None: required); the default's type is the type


NAMED: dict[str, NamedQuery] = {
    "irreversible-approvals": NamedQuery(
        "every irreversible tool call of the last `days` days (default 7) with who approved it",
        """
        SELECT requested_at, tenant_id, run_id, call_id, tool, tool_version, policy_decision, approved, approver,
               authorized_by, status, is_error
        FROM tool_calls
        WHERE irreversible AND requested_at >= now() - to_days({days})
        ORDER BY requested_at
        """,
        {"days": 7},
    ),
    "cost-per-tenant-per-day": NamedQuery(
        "what each tenant spent each UTC day over the last `days` days (default 30): settled model and tool calls",
        """
        SELECT day, tenant_id, round(sum(cost_usd), 6) AS cost_usd, count(*) AS calls,
               count(DISTINCT run_id) AS runs,
               round(sum(cost_usd) FILTER (WHERE kind = 'llm'), 6) AS model_usd,
               round(sum(cost_usd) FILTER (WHERE kind = 'tool'), 6) AS tool_usd
        FROM costs
        WHERE day >= current_date - to_days({days})
        GROUP BY day, tenant_id
        ORDER BY day, tenant_id
        """,
        {"days": 30},
    ),
    "run-history": NamedQuery(
        "one run's full history: every event of `run_id` in journal order",
        "SELECT * FROM events WHERE run_id = {run_id} ORDER BY journal_time",
        {"run_id": None},
    ),
    "flagged-runs": NamedQuery(
        "runs whose trajectories were flagged in the last `days` days (default 30): a RunFlagged (the loop "
        "detector in warn mode), LoopDetected or EvalVerdict (a failed step check) event",
        """
        SELECT r.run_id, r.tenant_id, r.status, r.started_at, r.ended_at, f.flags, f.kinds, f.first_flagged_at
        FROM (SELECT run_id, count(*) AS flags, string_agg(DISTINCT event_type || ':' || kind, ', ') AS kinds,
                     min(flagged_at) AS first_flagged_at
              FROM flags GROUP BY run_id) f
        JOIN runs r USING (run_id)
        WHERE f.first_flagged_at >= now() - to_days({days})
        ORDER BY f.first_flagged_at
        """,
        {"days": 30},
    ),
}


def _literal(name: str, default: int | str | None, text: str) -> str:
    if isinstance(default, int):
        try:
            value = int(text)
        except ValueError:
            raise AuditQueryError(f"parameter {name} must be a whole number, not {text!r}") from None
        if not 0 <= value <= 100_000:
            raise AuditQueryError(f"parameter {name} must be between 0 and 100000, not {value}")
        return str(value)
    return "'" + text.replace("'", "''") + "'"


def render(name: str, params: Mapping[str, str]) -> str:
    """The named query's SQL with its parameters as literals."""
    query = NAMED.get(name)
    if query is None:
        raise AuditQueryError(f"no named query {name!r}; known: {', '.join(sorted(NAMED))}")
    unknown = set(params) - set(query.params)
    if unknown:
        raise AuditQueryError(
            f"{name} takes no parameter {', '.join(sorted(unknown))} (it takes: {', '.join(query.params)})"
        )
    values: dict[str, str] = {}
    for param, default in query.params.items():
        if param not in params and default is None:
            raise AuditQueryError(f"{name} needs --param {param}=...")
        values[param] = _literal(param, default, params.get(param, str(default)))
    return query.sql.format(**values)
