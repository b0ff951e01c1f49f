"""Blob handles: the string an event carries round-trips exactly, and every other string is refused
with a typed error before it can become a key or a path."""

from __future__ import annotations

import pytest

from agentstream.blobs import BlobHandle, BlobHandleInvalid
from agentstream.blobs.handle import MAX_HANDLE_CHARS, scope_prefix

SHA = "ab" * 32
GOOD = f"blob:v1/acme/run_0123abcd/{SHA}/1234"


def test_round_trip_and_key_layout() -> None:
    handle = BlobHandle.parse(GOOD)
    assert handle == BlobHandle("acme", "run_0123abcd", SHA, 1234)
    assert str(handle) == GOOD
    assert handle.key == f"acme/run_0123abcd/{SHA}"
    assert BlobHandle.parse(str(BlobHandle("default", "memory", SHA, 0))).size == 0
    assert scope_prefix("acme", None) == "acme/"
    assert scope_prefix("acme", "run_1") == "acme/run_1/"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "blob:v1",
        GOOD.replace("blob:v1", "blob:v2"),
        GOOD.replace("blob:v1", "BLOB:V1"),
        GOOD + "/",
        GOOD + "\n",
        " " + GOOD,
        f"blob:v1/acme/../{SHA}/1",  # traversal as a scope
        f"blob:v1/../run_1/{SHA}/1",  # traversal as a tenant
        f"blob:v1/acme/./{SHA}/1",
        f"blob:v1//etc/passwd/{SHA}/1",  # absolute path smuggled in
        f"/blob:v1/acme/run_1/{SHA}/1",
        f"blob:v1/acme/run_1/../{SHA}/1",  # an extra component
        f"blob:v1/acme/run_1/{SHA.upper()}/1",  # digests are lowercase
        f"blob:v1/acme/run_1/{SHA[:-1]}/1",  # 63 hex
        f"blob:v1/acme/run_1/{SHA}0/1",  # 65 hex
        f"blob:v1/acme/run_1/{'g' * 64}/1",  # not hex
        f"blob:v1/acme/run_1/{SHA}/-1",
        f"blob:v1/acme/run_1/{SHA}/01",  # no leading zeros: one string per handle
        f"blob:v1/acme/run_1/{SHA}/1e3",
        f"blob:v1/acme/run_1/{SHA}/{'9' * 16}",
        f"blob:v1/ACME/run_1/{SHA}/1",  # tenants are lowercase
        f"blob:v1/a/run_1/{SHA}/1",  # one-character tenant
        f"blob:v1/acme/run.1/{SHA}/1",  # no dots in a scope
        f"blob:v1/acme/run%2F1/{SHA}/1",
        f"blob:v1/acme/run\\1/{SHA}/1",
        f"blob:v1/acme/run_1\x00/{SHA}/1",
        f"blob:v1/acme/{'r' * 129}/{SHA}/1",
        "blob:v1/acme/run_1/" + "a" * 10_000_000 + "/1",  # huge: refused by length first
        GOOD.replace("acme", "\u0430cme"),  # a Cyrillic a
    ],
    ids=lambda text: repr(text[:60]),
)
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(BlobHandleInvalid):
        BlobHandle.parse(text)


def test_huge_strings_are_refused_by_length_and_messages_stay_short() -> None:
    with pytest.raises(BlobHandleInvalid, match="characters") as refused:
        BlobHandle.parse("x" * (MAX_HANDLE_CHARS + 1))
    assert len(str(refused.value)) < 200
    with pytest.raises(BlobHandleInvalid) as bad:
        BlobHandle.parse("y" * MAX_HANDLE_CHARS)
    assert len(str(bad.value)) < 300


def test_handles_built_directly_are_validated_too() -> None:
    for args in [("..", "run_1", SHA, 1), ("acme", "../x", SHA, 1), ("acme", "run_1", "zz", 1),
                 ("acme", "run_1", SHA, -1), ("acme", "run_1", SHA, True), ("acme", "run_1", SHA, 1.0)]:  # fmt: skip
        with pytest.raises(BlobHandleInvalid):
            BlobHandle(*args)  # type: ignore[arg-type]
    with pytest.raises(BlobHandleInvalid):
        BlobHandle.parse(123)  # type: ignore[arg-type]
