"""The warehouse's Iceberg tables as Arrow: pyiceberg's SQL catalog over the SQLite file the
connector's JDBC catalog writes (`<warehouse>/catalog.db`, catalog name `iceberg`, the Iceberg
sink's default), a tenant's rows selected by a filter pushed down to the scan (the events table is
partitioned by tenant, so other tenants' files are not even opened). Blocking: call from a thread."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError
from pyiceberg.expressions import AlwaysTrue, BooleanExpression, EqualTo, In, IsNull, LessThan
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.manifest import FileFormat
from pyiceberg.table import FileScanTask, Table

from agentstream.audit.errors import TableFormatError, WarehouseUnavailable
from agentstream.connect.sink import CATALOG_NAME

log = logging.getLogger(__name__)
NAMESPACE = "audit"
TENANT_COLUMN = "tenant_id"


# pyiceberg's predicates as plain functions: their pydantic base hides the constructors from mypy.
def equal(column: str, value: str) -> BooleanExpression:
    return EqualTo(column, value)  # type: ignore[call-arg,arg-type]


def before(column: str, iso_time: str) -> BooleanExpression:
    return LessThan(column, iso_time)  # type: ignore[call-arg,arg-type]


def is_null(column: str) -> BooleanExpression:
    return IsNull(column)  # type: ignore[call-arg,arg-type]


def one_of(column: str, values: set[str]) -> BooleanExpression:
    return In(column, values)  # type: ignore[call-arg,arg-type]


def catalog_file(warehouse: Path) -> Path:
    return warehouse / "catalog.db"


def _catalog_ready(db: Path) -> bool:
    # Read-only look first: pyiceberg would create a missing catalog (file and tables), and a
    # reader must never create what the connector's catalog is about to create itself.
    if not db.is_file():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            row = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='iceberg_tables'").fetchone()
    except sqlite3.Error:
        return False
    return row is not None


def open_catalog(warehouse: Path, properties: Mapping[str, str] | None = None) -> Catalog:
    """The connectors' catalog; WarehouseUnavailable before the connector created it. `properties`:
    pyiceberg's, when it is not the embedded one in `warehouse` (connect/location.py: S3 files, a
    REST catalog)."""
    if properties and properties.get("type") != "sql":
        try:
            return load_catalog(CATALOG_NAME, **properties)
        except Exception as exc:  # its errors name hosts and paths: the operator's log gets them
            log.warning("the audit warehouse's catalog cannot be opened: %s", exc)
            raise WarehouseUnavailable(
                f"the audit warehouse's catalog cannot be opened ({type(exc).__name__})"
            ) from None
    db = catalog_file(warehouse)
    if not _catalog_ready(db):
        raise WarehouseUnavailable("the audit warehouse has no catalog yet (is the journal's sink running?)")
    # pyiceberg detects the connector's V1 layout (the views' `iceberg_type` column) by itself.
    if properties:  # the embedded catalog with its files elsewhere (S3): the same file, more properties
        return SqlCatalog(CATALOG_NAME, **{**properties, "uri": f"sqlite:///{db}"})
    return SqlCatalog(CATALOG_NAME, uri=f"sqlite:///{db}", warehouse=str(warehouse))


@dataclass
class Warehouse:
    """The audit tables of one warehouse, loaded at most once each (a query's tables read one snapshot)."""

    root: Path
    properties: Mapping[str, str] | None = None
    catalog: Catalog = field(init=False)
    _loaded: dict[str, Table] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.catalog = open_catalog(self.root, self.properties)

    def table_names(self) -> list[str]:
        """Every table of the audit namespace, by its bare name (`events`)."""
        try:
            return sorted(ident[-1] for ident in self.catalog.list_tables(NAMESPACE))
        except NoSuchNamespaceError:
            return []

    def table(self, name: str, *, reload: bool = False) -> Table:
        """The table as first loaded (one snapshot for a whole query), or as it is now (`reload`)."""
        if reload or name not in self._loaded:
            try:
                self._loaded[name] = self.catalog.load_table((NAMESPACE, name))
            except NoSuchTableError:
                raise WarehouseUnavailable(f"the audit warehouse has no table {name!r} yet") from None
        return self._loaded[name]

    def close(self) -> None:
        if isinstance(self.catalog, SqlCatalog):
            self.catalog.engine.dispose()

    def has_tenant_column(self, name: str) -> bool:
        return TENANT_COLUMN in self.table(name).schema().column_names

    def scan(self, name: str, tenant_id: str | None = None, row_filter: BooleanExpression | None = None) -> pa.Table:
        """The table's current rows as Arrow: only `tenant_id`'s when given (pushed down, then checked
        row by row again), only those matching `row_filter` when given."""
        table = self.table(name)
        expr: BooleanExpression = row_filter if row_filter is not None else AlwaysTrue()
        if tenant_id is not None:
            if not self.has_tenant_column(name):
                raise WarehouseUnavailable(f"table {name!r} has no tenant column: operators only")
            expr = equal(TENANT_COLUMN, tenant_id) if row_filter is None else expr & equal(TENANT_COLUMN, tenant_id)
        scan = table.scan(row_filter=expr)
        rows = self.read(name, list(scan.plan_files()), expr)
        if tenant_id is not None:
            # The scan already filtered; this makes isolation independent of how it did.
            rows = rows.filter(pc.equal(rows[TENANT_COLUMN], pa.scalar(tenant_id)))
        return rows

    def read(self, name: str, tasks: list[FileScanTask], row_filter: BooleanExpression | None = None) -> pa.Table:
        """The rows of these planned files of the table (as loaded) matching `row_filter`."""
        if any(task.file.file_format == FileFormat.AVRO for task in tasks):
            raise TableFormatError(
                f"table {name!r} is written as Avro data files, which the audit reader (pyiceberg) cannot read; "
                "tables written with AGENTSTREAM_WAREHOUSE_FORMAT=parquet (the default) can be queried"
            )
        table = self.table(name)
        expr = row_filter if row_filter is not None else AlwaysTrue()
        return ArrowScan(table.metadata, table.io, table.schema(), expr).to_table(tasks)
