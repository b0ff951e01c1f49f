"""The blob store the settings choose: the local directory by default, the local SeaweedFS or a
configured S3 endpoint with `AGENTSTREAM_BLOB_STORE=s3`; bad values name their variable."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentstream.blobs import BlobStoreUnavailable
from agentstream.blobs.factory import open_blob_store
from agentstream.blobs.local import LocalBlobStore
from agentstream.blobs.s3 import S3BlobStore
from agentstream.config import ModelSettings, Settings
from agentstream.credentials.keys import LocalKeyProvider
from agentstream.settings import BlobSettings, SettingsError, forget_loaded, load
from agentstream.settings.table import rows


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for variable, *_ in rows():
        monkeypatch.delenv(variable, raising=False)
    forget_loaded()
    yield monkeypatch
    forget_loaded()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(bootstrap_servers="127.0.0.1:1", topic_prefix="t", home=tmp_path / "home", model=ModelSettings(),
                    kafka_extra={}, kafka_credentials_dir=None)  # fmt: skip


def test_defaults_keep_blobs_in_the_home(env: pytest.MonkeyPatch, settings: Settings, tmp_path: Path) -> None:
    blobs = load(BlobSettings)
    assert (blobs.backend, blobs.max_bytes, blobs.s3_endpoint, blobs.local_s3_port) == ("local", 64 << 20, None, 18333)
    store = open_blob_store(settings, blobs, LocalKeyProvider(tmp_path / "master.json"))
    assert isinstance(store, LocalBlobStore)
    assert store.root == (settings.home / "blobs").resolve()
    assert store.max_bytes == 64 << 20


def test_s3_with_an_endpoint(env: pytest.MonkeyPatch, settings: Settings, tmp_path: Path) -> None:
    env.setenv("AGENTSTREAM_BLOB_STORE", "s3")
    env.setenv("AGENTSTREAM_BLOB_S3_ENDPOINT", "https://s3.eu-west-1.amazonaws.com")
    env.setenv("AGENTSTREAM_BLOB_S3_REGION", "eu-west-1")
    env.setenv("AGENTSTREAM_BLOB_S3_SECRET_ACCESS_KEY", "very-secret")
    env.setenv("AGENTSTREAM_BLOB_MAX_BYTES", "1000")
    blobs = load(BlobSettings)
    assert "very-secret" not in repr(blobs)
    store = open_blob_store(settings, blobs, LocalKeyProvider(tmp_path / "master.json"))
    assert isinstance(store, S3BlobStore)
    assert (store.target.endpoint_url, store.target.region, store.target.bucket) == (
        "https://s3.eu-west-1.amazonaws.com", "eu-west-1", "agentstream-blobs")  # fmt: skip
    assert store.max_bytes == 1000
    assert "very-secret" not in repr(store.target)


def test_s3_without_an_endpoint_needs_the_local_server(env: pytest.MonkeyPatch, settings: Settings) -> None:
    env.setenv("AGENTSTREAM_BLOB_STORE", "s3")
    with pytest.raises(BlobStoreUnavailable, match="agentstream blobs start"):
        open_blob_store(settings, load(BlobSettings), LocalKeyProvider(settings.home / "master.json"))


@pytest.mark.parametrize(
    ("variable", "value"),
    [("AGENTSTREAM_BLOB_STORE", "ftp"), ("AGENTSTREAM_BLOB_MAX_BYTES", "0"), ("AGENTSTREAM_BLOB_S3_BUCKET", "../x"),
     ("AGENTSTREAM_BLOB_S3_BUCKET", "Upper"), ("AGENTSTREAM_BLOB_LOCAL_S3_PORT", "70000")],
)  # fmt: skip
def test_bad_values_name_their_variable(env: pytest.MonkeyPatch, variable: str, value: str) -> None:
    env.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load(BlobSettings)
