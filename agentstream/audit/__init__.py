"""The audit warehouse's query side: SQL over the Iceberg tables the journal's sink writes, read
with pyiceberg and queried with DuckDB, one tenant's rows at a time or an operator's all; views for
runs, model calls, tool calls, approvals, costs and flags; named queries; per-tenant retention."""

from agentstream.audit.errors import AuditQueryError, TableFormatError, WarehouseUnavailable
from agentstream.audit.query import AuditResult, describe, run_history, run_query

__all__ = [
    "AuditQueryError",
    "AuditResult",
    "TableFormatError",
    "WarehouseUnavailable",
    "describe",
    "run_history",
    "run_query",
]
