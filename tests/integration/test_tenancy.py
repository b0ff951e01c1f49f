"""Tenants and API keys against a real broker: keys authenticate to their tenant only while valid,
only hashes reach the topic, and the CLI administers it all (the key format and the token bucket:
tests/unit/test_tenancy_keys.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from agentstream.cli import commands
from agentstream.cli.main import parser
from agentstream.config import Settings
from agentstream.kafka.journal import header_pairs
from agentstream.tenancy import admin
from agentstream.tenancy.admin import TenancyError
from agentstream.tenancy.directory import Tenant, TenantDirectory, tenants_topic
from agentstream.tenancy.keys import generate_key, hash_secret, parse_key
from tests.kafkahelpers import read_topic


@pytest.fixture
async def directory(settings: Settings) -> AsyncIterator[TenantDirectory]:
    async with TenantDirectory(settings) as d:
        yield d


async def _eventually(directory: TenantDirectory, condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the directory never saw the change"
        await asyncio.sleep(0.02)
        directory.refresh()


def _secret(plaintext: str) -> str:
    return plaintext[len("as_") + 12 + 1 :]  # the secret may itself contain "_"


async def test_an_issued_key_authenticates_to_its_tenant(settings: Settings, directory: TenantDirectory) -> None:
    created = await admin.create_tenant(settings, "acme", "ACME Corp", rate_per_s=2.5, burst=4, max_active_runs=3)
    plaintext = await admin.issue_key(settings, "acme", "ci")
    await directory.catch_up()
    tenant = directory.authenticate(f"Bearer {plaintext}")
    assert tenant == created == Tenant("acme", "ACME Corp", 2.5, 4, 3, disabled=False)
    assert directory.authenticate(f"bearer  {plaintext} ") == tenant
    # A directory started later rebuilds the same view from the topic alone.
    async with TenantDirectory(settings) as fresh:
        assert fresh.authenticate(f"Bearer {plaintext}") == tenant


async def test_bad_credentials_are_refused_without_raising(settings: Settings, directory: TenantDirectory) -> None:
    await admin.create_tenant(settings, "acme", "ACME")
    plaintext = await admin.issue_key(settings, "acme", "ci")
    await directory.catch_up()
    key_id = parse_key(plaintext)
    _, other = generate_key()
    wrong_secret = f"as_{key_id}_{_secret(other)}"
    assert parse_key(wrong_secret) == key_id and wrong_secret != plaintext
    for header in [
        f"Bearer {wrong_secret}",
        f"Bearer {other}",  # well-formed, unknown key id
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic x",
        f"Basic {plaintext}",
        "Bearer as_zz",
        plaintext,  # no scheme
        f"Bearer {plaintext}{plaintext}",
        "x" * 10_240,
        f"Bearer {'a' * 10_240}",
        "Bearer \x00\udcff",
    ]:
        assert directory.authenticate(header) is None, header
    assert directory.authenticate(12345) is None  # type: ignore[arg-type]


async def test_a_revoked_key_stops_authenticating(settings: Settings, directory: TenantDirectory) -> None:
    await admin.create_tenant(settings, "acme", "ACME")
    kept = await admin.issue_key(settings, "acme", "kept")
    revoked = await admin.issue_key(settings, "acme", "leaked")
    await directory.catch_up()
    assert directory.authenticate(f"Bearer {revoked}") is not None
    key_id = parse_key(revoked)
    assert key_id is not None
    await admin.revoke_key(settings, key_id)
    await _eventually(directory, lambda: directory.authenticate(f"Bearer {revoked}") is None)
    assert directory.authenticate(f"Bearer {kept}") is not None
    listed = {k.key_id: k for k in await admin.list_keys(settings, "acme")}
    assert listed[key_id].revoked and listed[key_id].label == "leaked"
    assert not listed[parse_key(kept) or ""].revoked
    assert (await admin.revoke_key(settings, key_id)).revoked  # again: a no-op, not an error
    with pytest.raises(TenancyError, match="no key"):
        await admin.revoke_key(settings, "0123456789ab")


async def test_a_disabled_tenants_keys_are_refused(settings: Settings, directory: TenantDirectory) -> None:
    await admin.create_tenant(settings, "acme", "ACME")
    plaintext = await admin.issue_key(settings, "acme", "ci")
    stop = asyncio.Event()
    background = asyncio.create_task(directory.run(stop))
    try:
        await _eventually(directory, lambda: directory.authenticate(f"Bearer {plaintext}") is not None)
        updated = await admin.update_tenant(settings, "acme", disabled=True, burst=7)
        assert updated == Tenant("acme", "ACME", 5.0, 7, 50, disabled=True)
        await _eventually(directory, lambda: directory.authenticate(f"Bearer {plaintext}") is None)
        await admin.update_tenant(settings, "acme", disabled=False)
        await _eventually(directory, lambda: directory.authenticate(f"Bearer {plaintext}") is not None)
    finally:
        stop.set()
        await background


async def test_only_hashes_reach_the_topic(settings: Settings) -> None:
    await admin.create_tenant(settings, "acme", "ACME")
    issued = [await admin.issue_key(settings, "acme", f"k{i}") for i in range(3)]
    await admin.revoke_key(settings, parse_key(issued[0]) or "")
    records = await read_topic(settings.bootstrap_servers, tenants_topic(settings), min_count=5)
    assert len(records) == 5
    raw = [b"".join([m.key() or b"", m.value() or b"", *(v for _, v in header_pairs(m))]) for m in records]
    for plaintext in issued:
        secret = _secret(plaintext)
        assert all(plaintext.encode() not in r and secret.encode() not in r for r in raw)
        assert any(hash_secret(plaintext).encode() in r for r in raw)
    keys = [m.key() for m in records]
    assert keys[0] == b"tenant/acme" and keys[-1] == f"key/{parse_key(issued[0])}".encode()


async def test_keys_and_tenants_are_scoped(settings: Settings) -> None:
    await admin.create_tenant(settings, "tenant-a", "A")
    await admin.create_tenant(settings, "tenant-b", "B")
    key_a = await admin.issue_key(settings, "tenant-a", "a-key")
    assert [k.key_id for k in await admin.list_keys(settings, "tenant-a")] == [parse_key(key_a)]
    assert await admin.list_keys(settings, "tenant-b") == []
    assert [t.tenant_id for t in await admin.list_tenants(settings)] == ["tenant-a", "tenant-b"]
    async with TenantDirectory(settings) as directory:
        assert (tenant := directory.authenticate(f"Bearer {key_a}")) is not None and tenant.tenant_id == "tenant-a"
    with pytest.raises(TenancyError, match="already exists"):
        await admin.create_tenant(settings, "tenant-a", "again")
    with pytest.raises(TenancyError, match="no tenant nope"):
        await admin.issue_key(settings, "nope", "x")
    for bad in ("A", "a", "-ab", "ab_c", "a" * 64, "ab\n"):
        with pytest.raises(TenancyError, match="invalid tenant id"):
            await admin.create_tenant(settings, bad, "x")
    with pytest.raises(TenancyError, match="burst"):
        await admin.update_tenant(settings, "tenant-a", burst=0)


async def test_cli_administers_tenants_and_keys(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", settings.bootstrap_servers)
    monkeypatch.setenv("AGENTSTREAM_TOPIC_PREFIX", settings.topic_prefix)

    async def cli(*argv: str) -> tuple[int, str, str]:
        code = await commands.dispatch(parser().parse_args(argv))
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = await cli("tenants", "create", "acme", "--name", "ACME", "--rate", "2", "--max-active-runs", "3")
    assert code == 0 and "created tenant acme" in out and "rate=2/s" in out and "max_active_runs=3" in out
    code, _, err = await cli("tenants", "create", "acme")
    assert code == 1 and "tenant acme already exists" in err
    code, _, err = await cli("tenants", "create", "Bad_Id")
    assert code == 1 and "invalid tenant id 'Bad_Id'" in err

    code, out, err = await cli("keys", "issue", "acme", "--label", "ci runner")
    plaintext = out.strip()
    assert code == 0 and parse_key(plaintext) is not None and "cannot be shown again" in err
    key_id = parse_key(plaintext)
    code, _, err = await cli("keys", "issue", "nope")
    assert code == 1 and "no tenant nope" in err

    code, out, _ = await cli("keys", "list", "acme")
    assert code == 0 and f"{key_id}" in out and "ci runner" in out and "active" in out
    assert plaintext not in out and hash_secret(plaintext) not in out

    code, out, _ = await cli("keys", "revoke", key_id or "")
    assert code == 0 and f"revoked key {key_id} of tenant acme" in out
    code, out, _ = await cli("keys", "list", "acme")
    assert "revoked" in out
    code, _, err = await cli("keys", "revoke", "not-a-key-id")
    assert code == 1 and "invalid key id" in err

    code, out, _ = await cli("tenants", "update", "acme", "--disable", "--burst", "9")
    assert code == 0 and "acme (disabled)" in out and "burst=9" in out and "rate=2/s" in out
    code, out, _ = await cli("tenants", "list")
    assert code == 0 and "acme" in out and "disabled" in out and "ACME" in out
    code, _, err = await cli("tenants", "update", "ghost", "--enable")
    assert code == 1 and "no tenant ghost" in err


async def test_a_key_used_the_moment_it_is_issued_authenticates(settings: Settings, directory: TenantDirectory) -> None:
    """No background poll between the issue and the first request: the directory reads the topic to
    its end for a well-formed key it has not seen, and many such requests share one read."""
    await admin.create_tenant(settings, "acme", "ACME")
    plaintext = await admin.issue_key(settings, "acme", "ci")
    assert directory.authenticate(f"Bearer {plaintext}") is None  # not read yet: the race the fix closes
    found = await asyncio.gather(*(directory.identify_fresh(f"Bearer {plaintext}") for _ in range(20)))
    assert all(f is not None and f[0].tenant_id == "acme" and f[1].key_id == parse_key(plaintext) for f in found)
    # Made-up keys (well formed, unknown ids) still fail, after a read; malformed ones without one.
    _, made_up = generate_key()
    started = time.monotonic()
    assert await directory.identify_fresh(f"Bearer {made_up}") is None
    assert await directory.identify_fresh("Bearer not-a-key") is None
    assert await directory.identify_fresh(None) is None
    assert time.monotonic() - started < 5
    # A revoked key stays refused: knowing its id, the directory has nothing newer to read for it.
    await admin.revoke_key(settings, parse_key(plaintext) or "")
    await directory.catch_up()
    assert await directory.identify_fresh(f"Bearer {plaintext}") is None
