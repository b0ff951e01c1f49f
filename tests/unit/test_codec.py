"""The Avro contract: every event round-trips, old schema versions stay readable, bad bytes are typed errors."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import orjson
import pytest
from fastavro import parse_schema, schemaless_writer

from agentstream.codec import MAGIC, AvroCodec, DecodeError, default_schema_dir, schema_fingerprint
from agentstream.events import EVENT_TYPES
from agentstream.kafka.partitioner import murmur2, partition_for

CODEC = AvroCodec()
SCHEMAS = default_schema_dir()


def _sample(type_name: str) -> object:
    values: dict[str, object] = {}
    for f in dataclasses.fields(EVENT_TYPES[type_name]):
        kind = str(f.type)
        if "list" in kind:
            values[f.name] = ["a", "b"] if "str" in kind else [0, 3]
        elif "dict" in kind:
            values[f.name] = {"k": "v"}
        elif kind.startswith("int"):
            values[f.name] = 7
        elif kind == "float":
            values[f.name] = 1.5
        elif kind == "bytes":
            values[f.name] = f"{f.name}-value".encode()
        elif kind == "bool":
            values[f.name] = True
        else:
            values[f.name] = f"{f.name}-value"
    return EVENT_TYPES[type_name](**values)


@pytest.mark.parametrize("type_name", sorted(EVENT_TYPES))
def test_every_event_round_trips(type_name: str) -> None:
    event = _sample(type_name)
    assert CODEC.decode(CODEC.encode(event)) == event  # type: ignore[arg-type]


@pytest.mark.parametrize("type_name", sorted(EVENT_TYPES))
def test_dataclass_fields_mirror_the_schema(type_name: str) -> None:
    schema = orjson.loads((SCHEMAS / f"{type_name}.avsc").read_bytes())
    assert [f["name"] for f in schema["fields"]] == [f.name for f in dataclasses.fields(EVENT_TYPES[type_name])]


def _history_pairs() -> list[tuple[Path, Path]]:
    pairs = []
    for old in sorted((SCHEMAS / "history").glob("*.avsc")):
        name = old.name.split(".")[0]
        pairs.append((old, SCHEMAS / f"{name}.avsc"))
    return pairs


def test_there_is_history_to_check() -> None:
    assert _history_pairs(), "schemas/history must hold the previous version of evolved schemas"


@pytest.mark.parametrize(("old", "current"), _history_pairs(), ids=lambda p: p.name)
def test_current_schema_reads_previous_version(old: Path, current: Path) -> None:
    writer = parse_schema(orjson.loads(old.read_bytes()))
    name = current.stem
    record = {
        f["name"]: dataclasses.asdict(_sample(name))[f["name"]]  # type: ignore[call-overload]
        for f in orjson.loads(old.read_bytes())["fields"]
    }
    data = CODEC.encode_record(name, record, writer=writer)
    decoded = CODEC.decode(data)
    assert decoded.type_name == name
    for key, value in record.items():
        assert getattr(decoded, key) == value
    # fields added since the old version take their declared defaults
    for f in orjson.loads(current.read_bytes())["fields"]:
        if f["name"] not in record:
            assert getattr(decoded, f["name"]) == f["default"]


def test_every_schema_change_is_backward_compatible_with_defaults() -> None:
    for old, current in _history_pairs():
        old_fields = {f["name"] for f in orjson.loads(old.read_bytes())["fields"]}
        for f in orjson.loads(current.read_bytes())["fields"]:
            if f["name"] not in old_fields:
                assert "default" in f, f"{current.name}: new field {f['name']} needs a default"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (None, "tombstone"),
        (b"", "bad magic"),
        (b'{"json": true}', "bad magic"),
        (MAGIC + b"\x00" * 8 + b"\x02", "unknown schema fingerprint"),
    ],
)
def test_bad_bytes_are_typed_errors(data: bytes | None, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        CODEC.decode(data)


def test_truncated_body_is_a_decode_error() -> None:
    encoded = CODEC.encode(_sample("LlmCallCompleted"))  # type: ignore[arg-type]
    with pytest.raises(DecodeError, match="corrupt LlmCallCompleted"):
        CODEC.decode(encoded[:20])


def test_fingerprint_matches_the_avro_spec() -> None:
    # The Avro spec's interop vector: CRC-64-AVRO("null") = 7195948357588979594 (written little-endian).
    assert schema_fingerprint("null") == (7195948357588979594).to_bytes(8, "little")
    buf = io.BytesIO()
    schemaless_writer(buf, parse_schema("string"), "x")
    assert buf.getvalue() == b"\x02x"


def test_partitioner_matches_the_java_client() -> None:
    # Vectors from Apache Kafka's UtilsTest.testMurmur2.
    import ctypes

    assert ctypes.c_int32(murmur2(b"21")).value == -973932308
    assert ctypes.c_int32(murmur2(b"foobar")).value == -790332482
    assert ctypes.c_int32(murmur2(b"a-little-bit-long-string")).value == -985981536
    assert 0 <= partition_for("run_abc", 8) < 8
