"""Tenant credentials' envelope encryption without a broker: seal and open, a ciphertext bound to its
tenant and name, and key rotation (the secrets topic and delegations: tests/integration/test_credentials.py)."""

from __future__ import annotations

import secrets
import stat
from pathlib import Path

import pytest

from agentstream.credentials import (
    DecryptionFailed,
    KeyUnavailable,
    LocalKeyProvider,
    open_sealed,
    seal,
    secret_aad,
)


def test_seal_and_open_round_trip(tmp_path: Path) -> None:
    provider = LocalKeyProvider(tmp_path / "keys" / "master.json")
    value = f"sk-live-{secrets.token_hex(16)}".encode()
    sealed = seal(provider, value, secret_aad("acme", "db"))
    assert value not in sealed.ciphertext and sealed.key_id == provider.key_id
    assert open_sealed(provider, sealed, secret_aad("acme", "db")) == value
    assert seal(provider, value, secret_aad("acme", "db")).ciphertext != sealed.ciphertext  # fresh key and nonce
    assert stat.S_IMODE(provider.path.stat().st_mode) == 0o600


def test_a_ciphertext_moved_to_another_tenant_or_name_does_not_open(tmp_path: Path) -> None:
    provider = LocalKeyProvider(tmp_path / "keys" / "master.json")
    sealed = seal(provider, b"hunter2", secret_aad("acme", "db"))
    for tenant, name in [("other", "db"), ("acme", "db2"), ("acme/db", ""), ("", "acme/db")]:
        with pytest.raises(DecryptionFailed):
            open_sealed(provider, sealed, secret_aad(tenant, name))
    with pytest.raises(KeyUnavailable):
        open_sealed(provider, type(sealed)("mk-unknown", sealed.wrapped_key, sealed.nonce, sealed.ciphertext), b"")
    flipped = bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:]
    with pytest.raises(DecryptionFailed):
        open_sealed(provider, type(sealed)(sealed.key_id, sealed.wrapped_key, sealed.nonce, flipped), b"")


def test_rotation_keeps_old_secrets_open_and_seals_new_ones_with_the_new_key(tmp_path: Path) -> None:
    provider = LocalKeyProvider(tmp_path / "keys" / "master.json")
    aad = secret_aad("acme", "db")
    old = seal(provider, b"old value", aad)
    new_id = provider.rotate()
    new = seal(provider, b"new value", aad)
    assert new.key_id == new_id == provider.key_id != old.key_id
    reopened = LocalKeyProvider(provider.path)  # another process: reads the rotated file
    assert reopened.key_id == new_id and set(reopened.key_ids()) == {old.key_id, new_id}
    assert open_sealed(reopened, old, aad) == b"old value" and open_sealed(reopened, new, aad) == b"new value"
    # The encryption keys hold no signing key any more (keys/signing.json, test_attack_key_separation).
    assert "signing" not in provider.path.read_text()
    assert stat.S_IMODE(provider.path.stat().st_mode) == 0o600
