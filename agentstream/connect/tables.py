"""A minimal read-only Iceberg reader (until a query engine lands): the SQLite JDBC catalog (stdlib
sqlite3) gives a table's metadata file, the metadata its current snapshot, and the snapshot's
manifest list, manifests and data files are Avro (fastavro) when the table writes Avro data files.
Enough for the tests and the benchmark to prove what landed, row by row."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import fastavro


def _local(location: str) -> Path:
    return Path(location.removeprefix("file:"))


def metadata_location(catalog_db: Path, namespace: str, table: str) -> str | None:
    if not catalog_db.exists():
        return None
    with sqlite3.connect(catalog_db) as db:
        try:
            row = db.execute(
                "SELECT metadata_location FROM iceberg_tables WHERE table_namespace = ? AND table_name = ?",
                (namespace, table),
            ).fetchone()
        except sqlite3.OperationalError:  # the catalog's tables are not created yet
            return None
    return None if row is None else str(row[0])


def _avro(path: Path) -> list[dict[str, Any]]:
    with path.open("rb") as fh:
        return [dict(r) for r in fastavro.reader(fh)]  # type: ignore[arg-type]


def data_files(catalog_db: Path, namespace: str, table: str) -> list[dict[str, Any]]:
    """The live data files of the table's current snapshot (none before the first commit): each
    with its `file_path`, `file_format` and `record_count`."""
    location = metadata_location(catalog_db, namespace, table)
    if location is None:
        return []
    meta = json.loads(_local(location).read_text())
    current = meta.get("current-snapshot-id")
    if current is None or current == -1:
        return []
    snapshot = next(s for s in meta["snapshots"] if s["snapshot-id"] == current)
    return [
        entry["data_file"]
        for manifest in _avro(_local(snapshot["manifest-list"]))
        for entry in _avro(_local(manifest["manifest_path"]))
        if entry["status"] != 2  # 2: DELETED
    ]


class TableReadError(RuntimeError):
    """A table this reader cannot read (its data files are not Avro)."""


def file_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of one data file (an entry of `data_files`)."""
    if data["file_format"] != "AVRO":
        raise TableReadError(f"this reader reads Avro data files only, not {data['file_format']}")
    return _avro(_local(data["file_path"]))


def table_rows(catalog_db: Path, namespace: str, table: str) -> list[dict[str, Any]]:
    """Every row of the table's current snapshot; the table must write Avro data files."""
    return [row for data in data_files(catalog_db, namespace, table) for row in file_rows(data)]
