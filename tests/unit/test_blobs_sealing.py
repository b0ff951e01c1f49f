"""Blob sealing: envelope encryption with the platform's master keys, bound to the handle, checked
by hash; every way a stored object can be wrong opens as `BlobCorrupted`, never as other bytes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from agentstream.blobs import BlobCorrupted, BlobHandle, BlobHandleInvalid
from agentstream.blobs.sealing import MAGIC, max_stored_bytes, open_blob, seal_blob
from agentstream.credentials.keys import LocalKeyProvider

DATA = b"tool result: the answer is 42. " * 300


def handle_of(data: bytes, tenant: str = "acme", scope: str = "run_1") -> BlobHandle:
    return BlobHandle(tenant, scope, hashlib.sha256(data).hexdigest(), len(data))


@pytest.fixture
def provider(tmp_path: Path) -> LocalKeyProvider:
    return LocalKeyProvider(tmp_path / "master.json")


def test_seal_and_open(provider: LocalKeyProvider) -> None:
    handle = handle_of(DATA)
    sealed = seal_blob(provider, handle, "tool_result", DATA)
    assert sealed.startswith(MAGIC)
    assert DATA[:32] not in sealed
    assert len(sealed) <= max_stored_bytes(len(DATA))
    assert open_blob(provider, handle, sealed) == ("tool_result", DATA)
    # A fresh data key and nonce per object: the same payload never seals to the same bytes.
    assert seal_blob(provider, handle, "tool_result", DATA) != sealed


def test_every_byte_is_authenticated(provider: LocalKeyProvider) -> None:
    handle = handle_of(DATA)
    sealed = bytes(seal_blob(provider, handle, "tool_result", DATA))
    for i in range(0, len(sealed), 7):  # header (key id, wrapped key, kind, nonce), ciphertext, tag
        flipped = bytearray(sealed)
        flipped[i] ^= 0x80
        with pytest.raises(BlobCorrupted):
            open_blob(provider, handle, flipped)


def test_bound_to_the_handle(provider: LocalKeyProvider) -> None:
    handle = handle_of(DATA)
    sealed = seal_blob(provider, handle, "tool_result", DATA)
    for other in (handle_of(DATA, tenant="globex"), handle_of(DATA, scope="run_2"),
                  BlobHandle("acme", "run_1", "0" * 64, len(DATA)), BlobHandle("acme", "run_1", handle.sha256, 7)):  # fmt: skip
        with pytest.raises(BlobCorrupted):
            open_blob(provider, other, sealed)


def test_truncated_padded_or_foreign_bytes(provider: LocalKeyProvider) -> None:
    handle = handle_of(DATA)
    sealed = bytes(seal_blob(provider, handle, "tool_result", DATA))
    for broken in (b"", MAGIC, sealed[:20], sealed[:-1], sealed + b"\0", sealed + b"\0" * 4096,
                   b"PK\x03\x04" + sealed[4:], os.urandom(len(sealed))):  # fmt: skip
        with pytest.raises(BlobCorrupted):
            open_blob(provider, handle, broken)


def test_keys_another_deployment_or_a_rotation(provider: LocalKeyProvider, tmp_path: Path) -> None:
    handle = handle_of(DATA)
    sealed = seal_blob(provider, handle, "tool_result", DATA)
    stranger = LocalKeyProvider(tmp_path / "elsewhere.json")
    with pytest.raises(BlobCorrupted, match="data key"):
        open_blob(stranger, handle, sealed)
    provider.rotate()  # objects sealed before a rotation still open; new ones use the new key
    assert open_blob(provider, handle, sealed)[1] == DATA
    assert open_blob(provider, handle, seal_blob(provider, handle, "tool_result", DATA))[1] == DATA


def test_an_object_sealed_with_wrong_content_is_refused(provider: LocalKeyProvider) -> None:
    # A writer that lied about the digest: it authenticates, but the hash check still refuses it.
    lying = BlobHandle("acme", "run_1", "f" * 64, len(DATA))
    sealed = seal_blob(provider, lying, "tool_result", DATA)
    with pytest.raises(BlobCorrupted, match="sha256"):
        open_blob(provider, lying, sealed)


def test_kind_is_checked(provider: LocalKeyProvider) -> None:
    with pytest.raises(BlobHandleInvalid):
        seal_blob(provider, handle_of(DATA), "Bad Kind", DATA)
