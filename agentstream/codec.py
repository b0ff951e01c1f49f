"""Avro codec for every event on Kafka.

Wire format without a schema registry: Avro single-object encoding (0xC3 0x01, the writer
schema's 8-byte little-endian CRC-64-AVRO fingerprint, then the binary body). The fingerprint
selects the writer schema from the files shipped under `schemas/` (current and `history/`), and
the body is resolved into the current reader schema, so old data stays readable. The event type
is never chosen from a string in the input: an unknown fingerprint is a decode error.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from agentstream.events import EVENT_TYPES, Event
from agentstream.resources import resource_path
from agentstream.settings import ResourceSettings, once

MAGIC = b"\xc3\x01"


def schema_fingerprint(parsed: Any) -> bytes:
    """The 8 bytes after the magic: CRC-64-AVRO of the schema's parsing canonical form, little-endian
    (fastavro writes it that way), the same bytes every journal record written so far carries."""
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


class DecodeError(Exception):
    """Input bytes are not a decodable agentstream event. Carries the reason for the dead-letter topic."""


def default_schema_dir() -> Path:
    return once(ResourceSettings).schemas_dir or resource_path("schemas")


@dataclass(frozen=True, slots=True)
class _Writer:
    type_name: str
    parsed: Any


class AvroCodec:
    def __init__(self, schema_dir: Path | None = None) -> None:
        directory = schema_dir or default_schema_dir()
        self._current: dict[str, Any] = {}
        self._header: dict[str, bytes] = {}
        self._writers: dict[bytes, _Writer] = {}
        for path in sorted(directory.glob("*.avsc")):
            name, parsed, fingerprint = self._load(path)
            self._current[name] = parsed
            self._header[name] = MAGIC + fingerprint
            self._writers[fingerprint] = _Writer(name, parsed)
        for path in sorted((directory / "history").glob("*.avsc")):
            name, parsed, fingerprint = self._load(path)
            self._writers.setdefault(fingerprint, _Writer(name, parsed))
        missing = set(EVENT_TYPES) - set(self._current)
        if missing:
            raise RuntimeError(f"no Avro schema for event types: {sorted(missing)} in {directory}")

    @staticmethod
    def _load(path: Path) -> tuple[str, Any, bytes]:
        raw = orjson.loads(path.read_bytes())
        parsed = parse_schema(raw)
        return str(raw["name"]), parsed, schema_fingerprint(parsed)

    def schema(self, type_name: str) -> Any:
        return self._current[type_name]

    def encode(self, event: Event) -> bytes:
        return self.encode_record(event.type_name, event.to_record())

    def encode_record(self, type_name: str, record: dict[str, Any], writer: Any | None = None) -> bytes:
        """Encodes a plain record; `writer` lets tests write with an older schema version."""
        buf = io.BytesIO()
        if writer is None:
            buf.write(self._header[type_name])
            schemaless_writer(buf, self._current[type_name], record)
        else:
            buf.write(MAGIC + schema_fingerprint(writer))
            schemaless_writer(buf, writer, record)
        return buf.getvalue()

    def decode(self, data: bytes | None) -> Event:
        if data is None:
            raise DecodeError("empty value (tombstone) where an event was expected")
        if len(data) < 10 or data[:2] != MAGIC:
            raise DecodeError("not Avro single-object encoding (bad magic or too short)")
        writer = self._writers.get(bytes(data[2:10]))
        if writer is None:
            raise DecodeError(f"unknown schema fingerprint {bytes(data[2:10]).hex()}")
        try:
            record = schemaless_reader(io.BytesIO(data[10:]), writer.parsed, self._current[writer.type_name])
        except Exception as exc:  # fastavro raises several unrelated types on corrupt input
            raise DecodeError(f"corrupt {writer.type_name} body: {type(exc).__name__}: {exc}") from exc
        if not isinstance(record, dict):
            raise DecodeError(f"{writer.type_name} body is not a record")
        try:
            return EVENT_TYPES[writer.type_name](**record)
        except TypeError as exc:
            raise DecodeError(f"{writer.type_name} record does not match its event type: {exc}") from exc
