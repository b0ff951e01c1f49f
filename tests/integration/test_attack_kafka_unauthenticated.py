"""Issue 13, findings 2 (Kafka half) and 3: the broker authenticates every client (SASL/SCRAM) and
authorizes every request against ACLs generated from topics.yaml.

The attacks are real clients against the real local broker the platform starts by default: no
credentials, a wrong password, a tenant's or a tool's principal, and the components' own
principals on topics they are not listed for. Each must be refused by the broker and leave every
topic's end offsets as they were (checked as the admin)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from agentstream.cli import commands
from agentstream.cli.main import parser
from agentstream.config import Settings
from agentstream.kafka.acls import AclError, acl_drift, apply_acls, expected_grants
from agentstream.kafka.auth import (
    ADMIN,
    COMPONENTS,
    CREDENTIALS_DIR_ENV,
    SASL_FILE_ENV,
    CredentialStore,
    with_principal,
)
from agentstream.stack import child_env
from agentstream.topics import JOURNAL, load_topics
from bench.attacks import kafka as attacks

INTERNAL = attacks.INTERNAL_TOPICS


def _store(settings: Settings) -> CredentialStore:
    assert settings.kafka_credentials_dir is not None, "these tests need the local SASL broker"
    return CredentialStore(settings.kafka_credentials_dir)


def _auth(settings: Settings, component: str) -> dict[str, str]:
    principal = _store(settings).get(component)
    assert principal is not None, component
    return principal.client_config()


def _offsets(settings: Settings) -> dict[str, dict[int, int]]:
    topics = load_topics(settings.topic_prefix)
    return {
        short: attacks.end_offsets(settings.bootstrap_servers, settings.kafka_extra, topics[short].name)
        for short in INTERNAL
    }


@pytest.fixture
async def seeded(settings: Settings) -> Settings:
    """One record in the journal (as the admin), so a read that works has something to return."""
    journal = load_topics(settings.topic_prefix)[JOURNAL].name
    assert await attacks.produce(settings.bootstrap_servers, settings.kafka_extra, journal)
    return settings


async def test_a_client_without_credentials_can_neither_write_nor_read(seeded: Settings) -> None:
    settings = seeded
    topics = load_topics(settings.topic_prefix)
    before = _offsets(settings)
    for short in INTERNAL:
        assert not await attacks.produce(settings.bootstrap_servers, {}, topics[short].name, timeout_s=4), short
    assert not await attacks.consume_any(settings.bootstrap_servers, {}, topics[JOURNAL].name, timeout_s=4)
    assert _offsets(settings) == before


async def test_a_wrong_password_is_refused(seeded: Settings) -> None:
    settings = seeded
    topics = load_topics(settings.topic_prefix)
    before = _offsets(settings)
    for user in (ADMIN, "tool-executor"):
        wrong = attacks.scram(user, "not-the-password")
        for short in INTERNAL:
            assert not await attacks.produce(settings.bootstrap_servers, wrong, topics[short].name), (user, short)
        assert not await attacks.consume_any(settings.bootstrap_servers, wrong, topics[JOURNAL].name, timeout_s=4)
    assert _offsets(settings) == before


async def test_unlisted_principals_cannot_write_the_internal_topics(seeded: Settings) -> None:
    settings = seeded
    topics = load_topics(settings.topic_prefix)
    tenant = await attacks.create_user(settings.bootstrap_servers, settings.kafka_extra, "tenant-acme")
    tool = await attacks.create_user(settings.bootstrap_servers, settings.kafka_extra, "tool-mallory")
    before = _offsets(settings)
    for short in INTERNAL:
        name = topics[short].name
        for who, auth in (("tenant", tenant), ("tool", tool)):
            assert not await attacks.produce(settings.bootstrap_servers, auth, name), (who, short)
        # Every platform component that topics.yaml does not list as the topic's writer.
        for component in COMPONENTS:
            if component != ADMIN and component not in topics[short].writers:
                auth = _auth(settings, component)
                assert not await attacks.produce(settings.bootstrap_servers, auth, name), (component, short)
    assert "model-invoker" not in topics["tenants"].writers  # the example, covered above
    for who, auth in (("tenant", tenant), ("tool", tool)):
        assert not await attacks.consume_any(settings.bootstrap_servers, auth, topics[JOURNAL].name), who
    assert _offsets(settings) == before


async def test_principals_cannot_grant_themselves_acls_reset_passwords_or_join_other_groups(
    seeded: Settings,
) -> None:
    settings = seeded
    topics = load_topics(settings.topic_prefix)
    tool = await attacks.create_user(settings.bootstrap_servers, settings.kafka_extra, "tool-grabby")
    executor = _auth(settings, "tool-executor")
    bootstrap = settings.bootstrap_servers
    assert not await attacks.grant_self(bootstrap, tool, "tool-grabby", topics["tenants"].name)
    assert not await attacks.grant_self(bootstrap, executor, "tool-executor", topics["tenants"].name)
    assert not await attacks.reset_password(bootstrap, executor, ADMIN, "known-to-the-attacker")
    assert not await attacks.reset_password(bootstrap, tool, "orchestrator", "known-to-the-attacker")
    journal = topics[JOURNAL].name
    assert not await attacks.join_group(bootstrap, executor, journal, f"{journal}.orchestrator")
    # The orchestrator itself may: the ACLs are not simply refusing everything.
    assert await attacks.join_group(bootstrap, _auth(settings, "orchestrator"), journal, f"{journal}.orchestrator")
    # The admin still authenticates (its password was not changed), and nothing was granted.
    assert await acl_drift(bootstrap, topics, settings.kafka_extra) == []


async def test_each_listed_writer_can_write_and_each_reader_read(seeded: Settings) -> None:
    settings = seeded
    topics = load_topics(settings.topic_prefix)
    for short, spec in topics.items():
        for writer in spec.writers:
            auth = settings.kafka_extra if writer == ADMIN else _auth(settings, writer)
            assert await attacks.produce(settings.bootstrap_servers, auth, spec.name), (writer, short)
        for reader in spec.readers:
            assert await attacks.consume_any(settings.bootstrap_servers, _auth(settings, reader), spec.name), (
                reader,
                short,
            )


async def test_topics_verify_reports_a_removed_acl_and_create_restores_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from confluent_kafka.admin import AclBindingFilter, AdminClient  # type: ignore[attr-defined]

    topics = load_topics(settings.topic_prefix)
    assert await acl_drift(settings.bootstrap_servers, topics, settings.kafka_extra) == []
    removed = next(
        g for g in sorted(expected_grants(topics)) if g.principal == "gateway" and g.name == topics["tenants"].name
    )
    b = removed.binding()
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers, **settings.kafka_extra})
    filt = AclBindingFilter(
        b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation, b.permission_type
    )
    for fut in admin.delete_acls([filt], request_timeout=15).values():
        assert len(fut.result()) == 1
    drift = await acl_drift(settings.bootstrap_servers, topics, settings.kafka_extra)
    assert [(d.what, d.grant) for d in drift] == [("missing", removed)]

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", settings.bootstrap_servers)
    monkeypatch.setenv("AGENTSTREAM_TOPIC_PREFIX", settings.topic_prefix)
    monkeypatch.setenv("AGENTSTREAM_HOME", str(settings.home))
    assert await commands.dispatch(parser().parse_args(["topics", "verify"])) == 1
    out = capsys.readouterr().out
    assert f"drift: ACL missing: {removed}" in out
    assert "password" not in out

    assert await commands.dispatch(parser().parse_args(["topics", "create"])) == 0
    assert "no drift" in capsys.readouterr().out
    assert await acl_drift(settings.bootstrap_servers, topics, settings.kafka_extra) == []
    assert await apply_acls(settings.bootstrap_servers, topics, settings.kafka_extra) == []  # idempotent


async def test_the_full_attack_list_all_fails(seeded: Settings) -> None:
    """The list bench/security.py runs: every attempt refused."""
    settings = seeded
    topics = load_topics(settings.topic_prefix)
    components = {c: _auth(settings, c) for c in COMPONENTS if c != ADMIN}
    writers = {short: topics[short].writers for short in INTERNAL}
    before = _offsets(settings)
    results = await attacks.all_attacks(
        settings.bootstrap_servers, settings.topic_prefix, settings.kafka_extra, components, writers
    )
    assert len(results) >= 30
    assert [name for name, ok in results.items() if ok] == []
    assert _offsets(settings) == before


def test_credentials_are_private_and_each_process_gets_only_its_own(settings: Settings) -> None:
    store = _store(settings)
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    for component in COMPONENTS:
        assert stat.S_IMODE(store.path(component).stat().st_mode) == 0o600, component
        principal = store.get(component)
        assert principal is not None and len(principal.password) >= 32
        assert principal.password not in repr(principal)
    assert settings.kafka_extra["sasl.password"] not in repr(settings)

    # A processor or the gateway started by hand on the local broker drops the admin's fallback.
    assert settings.kafka_extra["sasl.username"] == ADMIN
    for component in ("gateway", "orchestrator"):
        assert settings.as_component(component).kafka_extra["sasl.username"] == component

    env = child_env(settings, "http://127.0.0.1:1")
    assert SASL_FILE_ENV not in env  # never the admin's
    for component in COMPONENTS:
        if component == ADMIN:
            continue
        own = with_principal(env, component)
        assert own[SASL_FILE_ENV] == str(store.path(component))
        assert CREDENTIALS_DIR_ENV not in own
        # Nothing else in its environment carries a password.
        others = [store.get(c) for c in COMPONENTS]
        assert not any(p is not None and p.password in "".join(own.values()) for p in others)


async def test_a_broker_without_an_authorizer_is_reported(settings: Settings) -> None:
    """The control switch (`LocalKafka(secure=False)`) is visible: ACLs cannot be applied there."""
    from agentstream.localkafka import LocalKafka, free_port

    kafka = LocalKafka(settings.home / "plain-kafka", port=free_port(), controller_port=free_port(), secure=False)
    await kafka.start()
    try:
        topics = load_topics(settings.topic_prefix)
        with pytest.raises(AclError) as info:
            await apply_acls(kafka.bootstrap, topics, {})
        assert info.value.security_disabled
    finally:
        await kafka.stop()


async def test_a_log_dir_from_before_sasl_is_upgraded_on_start(tmp_path: Path) -> None:
    """A user's broker formatted by an earlier version (PLAINTEXT, no users) starts secured, its
    data kept: no manual step, and from then on no anonymous client gets in."""
    from agentstream.localkafka import LocalKafka, free_port
    from agentstream.topics import create_topics

    topic = load_topics("upgrade")[JOURNAL]
    old = LocalKafka(tmp_path / "kafka", port=free_port(), controller_port=free_port(), secure=False)
    await old.start()
    try:
        await create_topics(old.bootstrap, [topic], {})
        assert await attacks.produce(old.bootstrap, {}, topic.name)  # anyone could, before
    finally:
        await old.stop()
    new = LocalKafka(old.data_dir, port=old.port, controller_port=old.controller_port)
    await new.start()
    try:
        assert await attacks.consume_any(new.bootstrap, new.admin_config(), topic.name)  # the data survived
        assert not await attacks.produce(new.bootstrap, {}, topic.name, timeout_s=4)
        assert not await attacks.consume_any(new.bootstrap, {}, topic.name, timeout_s=4)
        orchestrator = new.credentials.get("orchestrator")
        assert orchestrator is not None  # the components' users were created too
        text = (new.data_dir / "server.properties").read_text()
        # PLAIN on the client listener was for the one upgrade start only.
        assert "listener.name.sasl_plaintext.plain" not in text and "SCRAM-SHA-512,PLAIN" not in text
    finally:
        await new.stop()
