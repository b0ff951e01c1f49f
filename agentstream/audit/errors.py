"""The audit warehouse's typed errors. Their messages may reach a tenant (through the gateway), so
they never name a file of the warehouse."""

from __future__ import annotations


class AuditQueryError(ValueError):
    """A query that cannot run: bad SQL, a forbidden operation (files, extensions, settings), an
    unknown table, or one past its time limit."""


class WarehouseUnavailable(RuntimeError):
    """No warehouse to read yet: no catalog, no table, or no committed rows."""


class TableFormatError(WarehouseUnavailable):
    """A table whose data files this reader cannot read (Avro data files: pyiceberg reads Parquet
    and ORC only)."""
