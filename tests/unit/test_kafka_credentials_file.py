"""A Kafka credentials file anyone else may read is refused before any client is built (the broker's
own refusals: tests/integration/test_attack_kafka_unauthenticated.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agentstream.kafka.auth import (
    CredentialStore,
)


def test_a_loose_credentials_file_is_refused(tmp_path: Path) -> None:
    from agentstream.kafka.auth import KafkaAuthError

    store = CredentialStore(tmp_path / "keys")
    principal = store.ensure("gateway")
    os.chmod(store.path("gateway"), 0o644)
    with pytest.raises(KafkaAuthError) as info:
        store.get("gateway")
    assert principal.password not in str(info.value)
