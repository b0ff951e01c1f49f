"""`agentstream blobs delete-run`: one run's blobs deleted by hand, refused while the run has not
ended (unless --force), never for another tenant's run or a named scope. The journal the command
reads is given as its entries (the events a real journal read returns); the store is a real local one."""

from __future__ import annotations

import argparse

import orjson
import pytest

from agentstream.blobs.factory import open_blob_store
from agentstream.blobs.store import BlobStore
from agentstream.cli.blob_runs import delete_run_command, delete_with_journal
from agentstream.cli.main import parser
from agentstream.client.journal import JournalEntry
from agentstream.config import Settings
from agentstream.events import CancelRequested, RunCompleted, RunEvent, RunHalted, RunStarted
from tests.unit import test_blobs_settings as shared

env, settings = shared.env, shared.settings  # a clean environment, a home with the default local store
RUN = "run_manual"


def journal(*events: RunEvent) -> list[JournalEntry]:
    return [JournalEntry(event, offset, 0) for offset, event in enumerate(events)]


def started(tenant: str = "acme") -> RunStarted:
    return RunStarted(f"{RUN}/started", RUN, tenant, "scripted", "[]", 5, "")


def args(*argv: str) -> argparse.Namespace:
    return parser().parse_args(["blobs", "delete-run", *argv])


async def stored(store: BlobStore, tenant: str, scope: str) -> int:
    return len(await store.list_blobs(tenant, scope))


async def fill(settings: Settings) -> BlobStore:
    store = open_blob_store(settings)
    for tenant, scope in (("acme", RUN), ("acme", "memory"), ("beta", RUN)):
        for n in range(2):
            await store.put(tenant, f"{tenant} {scope} {n}".encode(), scope=scope, kind="tool_result")
    return store


async def test_a_run_that_has_not_ended_is_refused_unless_forced(
    env: pytest.MonkeyPatch, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    store = await fill(settings)
    running = journal(started())
    assert await delete_with_journal(settings, args("--tenant", "acme", RUN), running) == 1
    assert "has not ended (last event RunStarted)" in capsys.readouterr().err
    halted = journal(started(), RunHalted(f"{RUN}/halt01", RUN, "acme", 3, 1, "steps", "max steps", True))
    assert await delete_with_journal(settings, args("--tenant", "acme", RUN), halted) == 1
    assert "halted and can still be resumed" in capsys.readouterr().err
    assert await delete_with_journal(settings, args("--tenant", "acme", RUN), []) == 1
    assert "not in the journal" in capsys.readouterr().err
    assert await stored(store, "acme", RUN) == 2
    assert await delete_with_journal(settings, args("--tenant", "acme", RUN, "--force", "--json"), running) == 0
    body = orjson.loads(capsys.readouterr().out)
    assert body["deleted"] == 2 and len(body["blobs"]) == 2 and body["run_id"] == RUN
    assert await stored(store, "acme", RUN) == 0
    assert (await stored(store, "acme", "memory"), await stored(store, "beta", RUN)) == (2, 2)


async def test_an_ended_run_is_deleted_and_listed(
    env: pytest.MonkeyPatch, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    store = await fill(settings)
    ended = journal(
        started(), CancelRequested(f"{RUN}/cancel", RUN, "acme", "stop", "op"),
        RunCompleted(f"{RUN}/terminal", RUN, "acme", 2, "done", "answered"),
    )  # fmt: skip
    assert await delete_with_journal(settings, args("--tenant", "acme", RUN), ended) == 0
    out = capsys.readouterr().out
    assert out.count(f"deleted acme/{RUN}/") == 2 and f"2 blobs of run {RUN} (tenant acme) deleted" in out
    assert await stored(store, "acme", RUN) == 0 and await stored(store, "beta", RUN) == 2


async def test_another_tenants_run_and_named_scopes_are_refused_even_when_forced(
    env: pytest.MonkeyPatch, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    store = await fill(settings)
    theirs = journal(started("beta"), RunCompleted(f"{RUN}/terminal", RUN, "beta", 2, "done", "answered"))
    assert await delete_with_journal(settings, args("--tenant", "acme", RUN, "--force"), theirs) == 1
    assert f"run {RUN} is tenant beta's, not acme's" in capsys.readouterr().err
    # Refused before the journal is read (no broker here): no run's blobs can be in a named scope.
    assert await delete_run_command(args("--tenant", "acme", "memory", "--force")) == 2
    assert "named blob scope" in capsys.readouterr().err
    assert await delete_run_command(args("--tenant", "acme", "../etc")) == 2
    assert (await stored(store, "acme", RUN), await stored(store, "acme", "memory")) == (2, 2)


def test_the_blobs_command_keeps_its_server_actions() -> None:
    assert parser().parse_args(["blobs", "status"]).blobs_command == "status"
    parsed = args("--tenant", "acme", RUN)
    assert (parsed.blobs_command, parsed.tenant, parsed.run_id, parsed.force) == ("delete-run", "acme", RUN, False)
    with pytest.raises(SystemExit):
        parser().parse_args(["blobs", "delete-run", RUN])  # the tenant is required
