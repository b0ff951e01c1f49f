"""The offload setting, and `runs show --fetch-blobs` reading a run's offloaded results back (as
the run's tenant) from the store the settings open."""

from __future__ import annotations

import pytest

from agentstream.blobs import BlobHandle
from agentstream.blobs.factory import open_blob_store
from agentstream.blobs.offload import offload
from agentstream.cli.offloaded import fetch_offloaded
from agentstream.client.journal import JournalEntry
from agentstream.config import Settings
from agentstream.events import ToolCallCompleted
from agentstream.settings import BlobSettings, SettingsError, forget_loaded, load
from tests.unit import test_blobs_settings as shared

RUN = "run_show"
env, settings = shared.env, shared.settings  # the blob settings tests' fixtures: a clean environment, a home


def test_the_offload_threshold_defaults_to_16_kib_and_zero_is_off(env: pytest.MonkeyPatch) -> None:
    assert load(BlobSettings).offload_bytes == 16384
    env.setenv("AGENTSTREAM_BLOB_OFFLOAD_BYTES", "0")
    forget_loaded()
    assert load(BlobSettings).offload_bytes == 0
    env.setenv("AGENTSTREAM_BLOB_OFFLOAD_BYTES", "-1")
    forget_loaded()
    with pytest.raises(SettingsError, match="AGENTSTREAM_BLOB_OFFLOAD_BYTES"):
        load(BlobSettings)


def completed(tenant: str, content: str, blob: str, call: str = "c1") -> JournalEntry:
    event = ToolCallCompleted("e-" + call, RUN, tenant, 1, call, "fetch_page", "k", content, False, 1.0, blob)
    return JournalEntry(event, 7, 0)


async def test_fetch_blobs_prints_each_offloaded_result_whole(
    env: pytest.MonkeyPatch, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    store = open_blob_store(settings)
    preview, handle = await offload(store, "acme", RUN, "page text " * 5000)
    entries = [completed("acme", "small", "", "c0"), completed("acme", preview, handle)]
    found = await fetch_offloaded(settings, entries)
    assert found.texts == {handle: "page text " * 5000} and found.errors == {}
    assert found.print() == 0
    assert f"--- {handle} ---\n" + "page text " * 5000 in capsys.readouterr().out


async def test_fetch_blobs_reads_as_the_runs_tenant_and_reports_what_it_cannot_read(
    env: pytest.MonkeyPatch, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    store = open_blob_store(settings)
    _, theirs = await offload(store, "globex", RUN, "globex secret " * 2000)
    gone = str(BlobHandle("acme", RUN, "e" * 64, 20_000))
    found = await fetch_offloaded(settings, [completed("acme", "p", theirs, "c1"), completed("acme", "p", gone, "c2")])
    assert found.texts == {}
    assert found.errors[theirs].startswith("BlobAccessDenied") and found.errors[gone].startswith("BlobMissing")
    assert found.print() == 1
    assert "globex secret" not in capsys.readouterr().err


def test_runs_show_takes_fetch_blobs() -> None:
    from agentstream.cli.main import parser

    assert parser().parse_args(["runs", "show", "run_x", "--fetch-blobs"]).fetch_blobs is True
    assert parser().parse_args(["runs", "show", "run_x"]).fetch_blobs is False
