"""The audit API: a tenant's SQL over its own rows of the audit warehouse, and the runs that have
left the hot journal read back from there.

Isolation is not the query's business: the reader scans each table with the caller's tenant as a
row filter before DuckDB sees a row, and the DuckDB session can reach no file, so no SQL a tenant
writes can name another tenant's data (agentstream.audit)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

from starlette.responses import Response

from agentstream.client.journal import JournalEntry
from agentstream.client.warehouse import warehouse_entries
from agentstream.contract.requests import AuditQuery
from agentstream.contract.resources import AuditRows
from agentstream.gateway.errors import ApiError, model_response


class AuditApi:
    def __init__(
        self, warehouse: Path, catalog: Mapping[str, str] | None = None, timeout_s: float = 30.0, concurrent: int = 2
    ) -> None:
        self.warehouse = warehouse
        self.catalog = catalog  # pyiceberg's properties when not the embedded catalog (S3, REST)
        self.timeout_s = timeout_s
        # Each query may hold up to its memory cap (agentstream.audit.query): a few at a time, the
        # rest wait their turn, so a burst of queries cannot take the gateway's memory or cores.
        self._running = asyncio.Semaphore(concurrent)

    async def query(self, tenant_id: str, body: AuditQuery) -> Response:
        from agentstream.audit import AuditQueryError, WarehouseUnavailable, run_query  # pyarrow on demand

        if not self.has_tables():
            raise ApiError(404, "no_audit_record", "this deployment's audit warehouse holds no tables yet")
        try:
            async with self._running:
                result = await run_query(
                    self.warehouse,
                    body.sql,
                    tenant_id=tenant_id,
                    max_rows=body.max_rows,
                    timeout_s=self.timeout_s,
                    catalog=self.catalog,
                )
        except AuditQueryError as exc:
            raise ApiError(400, "invalid_query", str(exc), field="sql") from None
        except WarehouseUnavailable:  # changed under the query, or its storage is unreachable
            raise ApiError(503, "warehouse_unavailable", "the audit warehouse could not be read; try again",
                           headers={"Retry-After": "5"}) from None  # fmt: skip
        return model_response(AuditRows(columns=result.columns, rows=result.rows, truncated=result.truncated))

    def has_tables(self) -> bool:
        """False when this host has no embedded catalog yet (a configured REST or S3 catalog: asked)."""
        return self.catalog is not None or (self.warehouse / "catalog.db").exists()

    async def run_entries(self, tenant_id: str, run_id: str) -> list[JournalEntry]:
        """A run's events from the warehouse, the tenant's own only ([] when it has none)."""
        if not self.has_tables():
            return []  # no warehouse on this host: an unknown run is simply not found
        async with self._running:
            return await warehouse_entries(self.warehouse, run_id, tenant_id, self.catalog)
