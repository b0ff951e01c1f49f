"""The warehouse's namespace, and the tables whose partitioning must not depend on which record
comes first, created before any sink runs.

Two sink tasks auto-creating tables in a namespace that does not exist yet both try to create it,
and the SQLite JDBC catalog answers the loser with a constraint error instead of
AlreadyExistsException, which fails that task for good. Created up front, through pyiceberg's SQL
catalog on the same SQLite file and under the same catalog name as the connectors, the namespace
exists and no task creates it.

A table the sink auto-creates takes its columns from its first record, and its partition spec
only if that record has the partition's columns: the control topic's first record may be a tool
switch, which has no tenant_id, and the table would then be unpartitioned for good. Such a table
is created here with the columns its partitioning needs; the sink adds the others as records bring
them (`evolve-schema-enabled`).

Measured: the Java JdbcCatalog (jdbc.schema-version V1) opens a catalog.db pyiceberg 0.12 created
(pyiceberg writes the V1 layout, `iceberg_type` included), finds the namespace, creates tables in
it, and the sink appends to and evolves the tables pyiceberg created."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agentstream.connect.sink import CATALOG_NAME

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog


@dataclass(frozen=True)
class AuditTable:
    """A table created up front: string columns, a record-time column (timestamptz), and its
    partitioning by the day of that time and by a tenant column (identity)."""

    name: str  # "namespace.table"
    time_field: str
    tenant_field: str
    columns: tuple[str, ...] = ("event_id", "event_type")


def _catalog(warehouse: Path, catalog: Mapping[str, str] | None) -> Catalog:
    # Imported here: pyiceberg takes half a second to import, and only a warehouse start needs it.
    from pyiceberg.catalog import load_catalog
    from pyiceberg.catalog.sql import SqlCatalog

    warehouse.mkdir(parents=True, exist_ok=True)
    if catalog:  # connect/location.py: S3 files or a REST catalog
        return load_catalog(CATALOG_NAME, **catalog)
    return SqlCatalog(CATALOG_NAME, uri=f"sqlite:///{warehouse / 'catalog.db'}", warehouse=warehouse.as_uri())


def _ensure(
    warehouse: Path,
    namespaces: set[str],
    tables: tuple[AuditTable, ...],
    props: Mapping[str, str],
    catalog_props: Mapping[str, str] | None = None,
) -> list[str]:
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.exceptions import NamespaceAlreadyExistsError, TableAlreadyExistsError
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.schema import Schema
    from pyiceberg.transforms import DayTransform, IdentityTransform
    from pyiceberg.types import NestedField, StringType, TimestamptzType

    created: list[str] = []
    catalog = _catalog(warehouse, catalog_props)
    try:
        for namespace in sorted(namespaces | {t.name.rsplit(".", 1)[0] for t in tables}):
            try:
                catalog.create_namespace(namespace)
                created.append(namespace)
            except NamespaceAlreadyExistsError:
                pass
        for table in tables:
            names = (*table.columns, table.tenant_field)
            fields = [NestedField(i, name, StringType(), required=False) for i, name in enumerate(names, 1)]
            time_id = len(fields) + 1
            schema = Schema(*fields, NestedField(time_id, table.time_field, TimestamptzType(), required=False))
            # Named as the sink names the partitions it declares itself (e.g. record_time_day).
            spec = PartitionSpec(
                PartitionField(time_id, 1000, DayTransform(), f"{table.time_field}_day"),
                PartitionField(len(fields), 1001, IdentityTransform(), table.tenant_field),
            )
            try:
                catalog.create_table(table.name, schema, partition_spec=spec, properties=dict(props))
                created.append(table.name)
            except TableAlreadyExistsError:
                pass
    finally:
        if isinstance(catalog, SqlCatalog):
            catalog.engine.dispose()
    return created


async def ensure_catalog(
    warehouse: Path,
    namespaces: set[str],
    tables: tuple[AuditTable, ...] = (),
    properties: Mapping[str, str] | None = None,
    catalog: Mapping[str, str] | None = None,
) -> list[str]:
    """Creates the namespaces and tables that do not exist yet (and the catalog's own tables, on a
    new warehouse); returns what it created. `properties`: the tables' (e.g. their file format);
    `catalog`: pyiceberg's catalog properties when not the embedded one (connect/location.py)."""
    return await asyncio.to_thread(_ensure, warehouse, namespaces, tables, properties or {}, catalog)
