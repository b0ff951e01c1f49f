"""Tenant credentials: ciphertext-only records on the real `secrets` topic, and delegations that
release a secret only to the call, tool and scopes they name (envelope encryption and key
rotation: tests/unit/test_credentials_envelope.py)."""

from __future__ import annotations

import asyncio
import base64
import io
import secrets
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentstream.cli.main import main
from agentstream.config import Settings
from agentstream.credentials import (
    CredentialBroker,
    CredentialError,
    DelegationExpired,
    DelegationInvalid,
    DelegationIssuer,
    DelegationReused,
    LocalKeyProvider,
    MemoryUsedTokens,
    RocksUsedTokens,
    SecretAdminError,
    SecretDirectory,
    SecretNotGranted,
    SecretVault,
    UsedTokens,
    local_key_provider,
    open_sealed,
    secret_aad,
)
from agentstream.credentials.store import secrets_topic
from agentstream.kafka.journal import header_pairs
from agentstream.tenancy import admin
from tests.kafkahelpers import read_topic

NOW = 1_700_000_000_000
DELEGATION_KEY = b"the delegation key of these tests"  # >= 32 bytes, as a keyring's derived key


def _value() -> str:
    return f"sk-live-{secrets.token_hex(16)}"


@pytest.fixture
def provider(tmp_path: Path) -> LocalKeyProvider:
    return LocalKeyProvider(tmp_path / "keys" / "master.json")


@pytest.fixture
async def stocked(
    settings: Settings, provider: LocalKeyProvider
) -> AsyncIterator[tuple[SecretDirectory, dict[str, str]]]:
    """Two tenants' secrets on the topic and a directory that has read them."""
    await admin.create_tenant(settings, "acme", "ACME")
    await admin.create_tenant(settings, "other", "Other")
    vault = SecretVault(settings, provider)
    values = {"db": _value(), "api": _value(), "other-db": _value()}
    await vault.put_secret("acme", "db", values["db"], ["sql"], ["db:read"])
    await vault.put_secret("acme", "api", values["api"], ["http", "sql"], [])
    await vault.put_secret("other", "db", values["other-db"], ["sql"], [])
    async with SecretDirectory(settings) as directory:
        yield directory, values


async def test_only_ciphertext_reaches_the_topic(
    settings: Settings, provider: LocalKeyProvider, stocked: tuple[SecretDirectory, dict[str, str]]
) -> None:
    directory, values = stocked
    vault = SecretVault(settings, provider)
    replaced = _value()
    info = await vault.put_secret("acme", "db", replaced, ["sql"], ["db:read"])
    assert info.version == 2 and info.tools == ("sql",) and info.scopes == ("db:read",)
    await vault.delete_secret("acme", "api")
    records = await read_topic(settings.bootstrap_servers, secrets_topic(settings), min_count=5)
    assert len(records) == 5
    raw = [b"".join([m.key() or b"", m.value() or b"", *(v for _, v in header_pairs(m))]) for m in records]
    for value in [*values.values(), replaced]:
        forms = [value.encode(), base64.b64encode(value.encode()), value.encode().hex().encode()]
        assert all(form not in r for form in forms for r in raw)
    assert [m.key() for m in records][-1] == b"secret/acme/api"
    listed = await vault.list_secrets("acme")
    assert [(s.name, s.version) for s in listed] == [("db", 2)]
    assert all(replaced not in repr(s) for s in listed)
    await directory.catch_up()
    stored = directory.get("acme", "db")
    assert stored is not None and directory.get("acme", "api") is None
    assert open_sealed(provider, stored.sealed, secret_aad("acme", "db")) == replaced.encode()
    with pytest.raises(SecretAdminError, match="no secret api"):
        await vault.delete_secret("acme", "api")
    with pytest.raises(SecretAdminError, match="no tenant ghost"):
        await vault.put_secret("ghost", "db", "x", ["sql"], [])
    with pytest.raises(SecretAdminError, match="invalid secret name"):
        await vault.put_secret("acme", "a/b", "x", ["sql"], [])
    with pytest.raises(SecretAdminError, match="at least one of the tools"):
        await vault.put_secret("acme", "db", "x", [], [])


def _broker(directory: SecretDirectory, provider: LocalKeyProvider, used: UsedTokens | None = None) -> CredentialBroker:
    return CredentialBroker(directory, provider, DELEGATION_KEY, used or MemoryUsedTokens())


async def _present(
    broker: CredentialBroker,
    token: str,
    tool: str = "sql",
    run_id: str = "run-1",
    call_id: str = "call-1",
    now_ms: int = NOW + 1,
) -> dict[str, str]:
    return await broker.exchange(token, tool=tool, run_id=run_id, call_id=call_id, now_ms=now_ms)


async def test_a_delegation_releases_only_what_it_names_to_the_call_it_names(
    provider: LocalKeyProvider, stocked: tuple[SecretDirectory, dict[str, str]]
) -> None:
    directory, values = stocked
    broker = _broker(directory, provider)
    issuer = DelegationIssuer(DELEGATION_KEY)

    def token(tool: str = "sql", scopes: tuple[str, ...] = ("db:read",), names: tuple[str, ...] = ("db", "api")) -> str:
        return issuer.issue("acme", "run-1", "call-1", tool, list(scopes), list(names), NOW, single_use=False)

    assert await _present(broker, token()) == {"db": values["db"], "api": values["api"]}
    # (error, token, presented by tool, run, call)
    refusals: list[tuple[type[CredentialError], str, str, str, str]] = [
        (DelegationInvalid, token(), "http", "run-1", "call-1"),  # presented by another tool
        (DelegationInvalid, token(), "sql", "run-2", "call-1"),
        (DelegationInvalid, token(), "sql", "run-1", "call-2"),
        (SecretNotGranted, token(scopes=()), "sql", "run-1", "call-1"),  # "db" requires db:read
        (SecretNotGranted, token(tool="http", names=("db",)), "http", "run-1", "call-1"),  # "db" is sql-only
        (SecretNotGranted, token(names=("missing",)), "sql", "run-1", "call-1"),
    ]
    for error, tok, tool, run_id, call_id in refusals:
        with pytest.raises(error) as caught:
            await _present(broker, tok, tool, run_id, call_id)
        _assert_clean(caught.value, tok, values)
    # The other tenant's "db" is another secret: no acme delegation reaches it, and vice versa.
    other = issuer.issue("other", "run-1", "call-1", "sql", [], ["db"], NOW, single_use=False)
    assert await _present(broker, other) == {"db": values["other-db"]}


async def test_expired_tampered_and_forged_tokens_are_refused(
    provider: LocalKeyProvider, stocked: tuple[SecretDirectory, dict[str, str]]
) -> None:
    directory, values = stocked
    broker = _broker(directory, provider)
    issuer = DelegationIssuer(DELEGATION_KEY)
    good = issuer.issue("acme", "run-1", "call-1", "sql", ["db:read"], ["db"], NOW, ttl_s=60)
    with pytest.raises(DelegationExpired) as expired:
        await _present(broker, good, now_ms=NOW + 60_000)
    _assert_clean(expired.value, good, values)
    payload, signature = good.split(".")

    def flip(segment: str) -> str:  # changes one character, keeping the base64url alphabet
        return segment[:-2] + ("A" if segment[-2] != "A" else "B") + segment[-1]

    forged = DelegationIssuer(b"k" * 32).issue("acme", "run-1", "call-1", "sql", ["db:read"], ["db"], NOW)
    for bad in [
        f"{flip(payload)}.{signature}",
        f"{payload}.{flip(signature)}",
        forged,
        payload,
        f"{payload}.{signature}.{signature}",
        "",
        "not a token",
        "x" * 100_000,
        good + "=",
    ]:
        with pytest.raises(DelegationInvalid) as caught:
            await _present(broker, bad)
        _assert_clean(caught.value, bad, values)
    assert await _present(broker, good, now_ms=NOW + 59_999) == {"db": values["db"]}


async def test_a_single_use_delegation_is_refused_the_second_time_even_after_a_restart(
    tmp_path: Path, provider: LocalKeyProvider, stocked: tuple[SecretDirectory, dict[str, str]]
) -> None:
    directory, values = stocked
    issuer = DelegationIssuer(DELEGATION_KEY)
    token = issuer.issue("acme", "run-1", "call-1", "sql", ["db:read"], ["db"], NOW)
    used = RocksUsedTokens(tmp_path / "used")
    broker = _broker(directory, provider, used)
    with pytest.raises(DelegationInvalid):  # a refused attempt does not burn the token
        await _present(broker, token, tool="http")
    assert await _present(broker, token) == {"db": values["db"]}
    used.close()
    reopened = RocksUsedTokens(tmp_path / "used")
    try:
        with pytest.raises(DelegationReused) as caught:
            await _present(_broker(directory, provider, reopened), token)
        _assert_clean(caught.value, token, values)
        assert reopened.prune(NOW) == 0 and reopened.prune(NOW + 301_000) == 1
    finally:
        reopened.close()


def _assert_clean(exc: BaseException, token: str, values: dict[str, str]) -> None:
    text = f"{exc} {exc!r} {exc.__cause__!r}"
    assert token not in text or not token, text
    payload, _, signature = token.partition(".")
    assert all(part not in text for part in (payload, signature) if len(part) > 8), text
    assert all(v not in text for v in values.values()), text


async def test_cli_puts_lists_and_deletes_secrets(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", settings.bootstrap_servers)
    monkeypatch.setenv("AGENTSTREAM_TOPIC_PREFIX", settings.topic_prefix)
    monkeypatch.setenv("AGENTSTREAM_HOME", str(settings.home))
    await admin.create_tenant(settings, "acme", "ACME")
    value, env_value = _value(), _value()

    async def cli(*argv: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        with pytest.raises(SystemExit) as exited:
            await asyncio.to_thread(main, list(argv))  # main() runs its own event loop
        out, err = capsys.readouterr()
        return int(exited.value.code or 0), out, err

    put = ("secrets", "put", "--tenant", "acme", "--name")
    code, out, _ = await cli(*put, "db", "--tools", "sql,http", "--scopes", "db:read", stdin=value + "\n")
    assert code == 0 and "stored secret db for tenant acme" in out and "version=1" in out and "tools=http,sql" in out
    monkeypatch.setenv("API_TOKEN", env_value)
    code, out, _ = await cli(*put, "api", "--tools", "http", "--from-env", "API_TOKEN")
    assert code == 0 and "scopes=-" in out
    code, _, err = await cli(*put, "x", "--tools", "http", "--from-env", "UNSET_VAR_FOR_TEST")
    assert code == 1 and "UNSET_VAR_FOR_TEST is not set" in err
    code, _, err = await cli("secrets", "put", "--tenant", "ghost", "--name", "db", "--tools", "sql", stdin="v")
    assert code == 1 and "no tenant ghost" in err

    code, out, _ = await cli("secrets", "list", "--tenant", "acme")
    assert code == 0 and "db" in out and "api" in out and "db:read" in out and "http,sql" in out
    assert value not in out and env_value not in out
    code, out, _ = await cli("secrets", "delete", "--tenant", "acme", "--name", "api")
    assert code == 0 and "deleted secret api of tenant acme" in out
    code, out, _ = await cli("secrets", "list", "--tenant", "acme")
    assert "api" not in out and "db" in out

    provider = local_key_provider(settings)
    assert stat.S_IMODE(provider.path.stat().st_mode) == 0o600
    async with SecretDirectory(settings) as directory:
        stored = directory.get("acme", "db")
        assert stored is not None
        assert open_sealed(provider, stored.sealed, secret_aad("acme", "db")) == value.encode()  # newline stripped
