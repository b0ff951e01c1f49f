"""Attacks on the broker itself (issue 13, findings 2 and 3): a client with no credentials or a
wrong password, and authenticated principals that topics.yaml does not list, writing the internal
topics, reading the journal, granting themselves ACLs, resetting a password, joining another
component's consumer group. Each returns True when the attack SUCCEEDED.

They use plain confluent-kafka clients built from a bare bootstrap on purpose (that is the
attacker's client), so they also run against the old PLAINTEXT broker with no authorizer (the
control: `LocalKafka(..., secure=False)`), where they succeed.

* `produce`: a record acknowledged on a topic (the attacker's producer is not idempotent: it asks
  for nothing but the topic's WRITE)
* `consume_any`: any record of a topic read back, or its partitions described
* `grant_self`: an ACL created by a non-admin principal
* `reset_password`: another user's SCRAM credentials changed by a non-admin principal
* `join_group`: a record read inside another component's consumer group
* `all_attacks`: every attempt above on a deployment's topics, by name
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

INTERNAL_TOPICS = ("runs.journal", "tenants", "tools.catalog", "control")
# An authentication or transport failure ends the attempt: nothing gets past it.
_REFUSED_CONNECTION = (KafkaError._AUTHENTICATION, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN)


def scram(username: str, password: str) -> dict[str, str]:
    return {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": username,
        "sasl.password": password,
    }


def _base(bootstrap: str, auth: Mapping[str, str]) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, "log_level": "0", **auth}


def _produce_sync(bootstrap: str, auth: Mapping[str, str], topic: str, timeout_s: float) -> bool:
    outcome: list[KafkaError | None] = []
    refused: list[KafkaError] = []

    def on_error(err: KafkaError) -> None:
        if err.code() in _REFUSED_CONNECTION:
            refused.append(err)

    producer = Producer(
        {**_base(bootstrap, auth), "acks": "all", "enable.idempotence": False,
         "message.timeout.ms": int(timeout_s * 1000), "error_cb": on_error}
    )  # fmt: skip
    value = b"attack:" + secrets.token_hex(8).encode()
    producer.produce(topic, value=value, key=b"attack", on_delivery=lambda err, _msg: outcome.append(err))
    deadline = time.monotonic() + timeout_s + 2
    while not outcome and time.monotonic() < deadline:
        producer.poll(0.1)
        if refused and not outcome:
            # The broker turned the connection away; give the delivery report a moment, then stop.
            producer.flush(0.5)
            break
    producer.purge()
    producer.flush(0)
    return bool(outcome) and outcome[0] is None


async def produce(bootstrap: str, auth: Mapping[str, str], topic: str, timeout_s: float = 6.0) -> bool:
    """True if the broker acknowledged a record on `topic`."""
    return await asyncio.to_thread(_produce_sync, bootstrap, auth, topic, timeout_s)


def _consume_sync(bootstrap: str, auth: Mapping[str, str], topic: str, group: str, timeout_s: float) -> bool:
    consumer = Consumer({**_base(bootstrap, auth), "group.id": group, "enable.auto.commit": False})
    try:
        try:
            md = consumer.list_topics(topic, timeout=timeout_s)
        except Exception:
            return False
        meta = md.topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            return False
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        return _reads_a_record(consumer, KafkaError.TOPIC_AUTHORIZATION_FAILED, timeout_s)
    finally:
        consumer.close()


def _reads_a_record(consumer: Consumer, refused: int, timeout_s: float) -> bool:
    """True once a record arrives; False on the `refused` authorization error, a refused
    connection, or nothing within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for msg in consumer.consume(100, 0.2):
            err = msg.error()
            if err is None:
                return True
            if err.code() in (refused, *_REFUSED_CONNECTION):
                return False
    return False


async def consume_any(bootstrap: str, auth: Mapping[str, str], topic: str, timeout_s: float = 5.0) -> bool:
    """True if a record of `topic` (which must hold at least one) was read back."""
    return await asyncio.to_thread(_consume_sync, bootstrap, auth, topic, "agentstream-reader", timeout_s)


def _join_sync(bootstrap: str, auth: Mapping[str, str], topic: str, group: str, timeout_s: float) -> bool:
    consumer = Consumer(
        {**_base(bootstrap, auth), "group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest"}
    )
    try:
        consumer.subscribe([topic])
        return _reads_a_record(consumer, KafkaError.GROUP_AUTHORIZATION_FAILED, timeout_s)
    finally:
        consumer.close()


async def join_group(bootstrap: str, auth: Mapping[str, str], topic: str, group: str, timeout_s: float = 8.0) -> bool:
    """True if a record of `topic` was consumed as a member of `group`."""
    return await asyncio.to_thread(_join_sync, bootstrap, auth, topic, group, timeout_s)


def _grant_sync(bootstrap: str, auth: Mapping[str, str], principal: str, topic: str) -> bool:
    binding = AclBinding(
        ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, f"User:{principal}", "*",
        AclOperation.WRITE, AclPermissionType.ALLOW,
    )  # fmt: skip
    admin = AdminClient(_base(bootstrap, auth))
    try:
        for fut in admin.create_acls([binding], request_timeout=10).values():
            fut.result()
        return True
    except Exception:
        return False


async def grant_self(bootstrap: str, auth: Mapping[str, str], principal: str, topic: str) -> bool:
    """True if `auth` could create an ACL letting `principal` write `topic`."""
    return await asyncio.to_thread(_grant_sync, bootstrap, auth, principal, topic)


def _reset_sync(bootstrap: str, auth: Mapping[str, str], user: str, password: str) -> bool:
    admin = AdminClient(_base(bootstrap, auth))
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096)
    try:
        upsert = UserScramCredentialUpsertion(user, info, password.encode())
        for fut in admin.alter_user_scram_credentials([upsert], request_timeout=10).values():
            fut.result()
        return True
    except Exception:
        return False


async def reset_password(bootstrap: str, auth: Mapping[str, str], user: str, password: str) -> bool:
    """True if `auth` could set `user`'s SCRAM password (here: to one the attacker knows)."""
    return await asyncio.to_thread(_reset_sync, bootstrap, auth, user, password)


def end_offsets(bootstrap: str, auth: Mapping[str, str], topic: str) -> dict[int, int]:
    """Each partition's end offset, asked as `auth` (the admin: to prove nothing was appended)."""
    consumer = Consumer({**_base(bootstrap, auth), "group.id": "agentstream-reader"})
    try:
        md = consumer.list_topics(topic, timeout=10)
        return {
            p: int(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1])
            for p in md.topics[topic].partitions
        }
    finally:
        consumer.close()


async def create_user(bootstrap: str, admin: Mapping[str, str], username: str) -> dict[str, str]:
    """A principal topics.yaml does not list (a tenant's, a tool's), as the admin would create it
    by mistake or for another purpose; returns its client settings."""
    password = secrets.token_urlsafe(24)
    if not await reset_password(bootstrap, admin, username, password):
        raise RuntimeError(f"the admin could not create the SCRAM user {username}")
    return scram(username, password)


async def all_attacks(
    bootstrap: str,
    topic_prefix: str,
    admin: Mapping[str, str],
    components: Mapping[str, Mapping[str, str]],
    writers: Mapping[str, tuple[str, ...]],
) -> dict[str, bool]:
    """Every attempt on a deployment's internal topics. `components` maps a component's name to
    its client settings, `writers` a topic's short name to its listed writers (topics.yaml)."""
    results: dict[str, bool] = {}
    full = {short: f"{topic_prefix}.{short}" for short in INTERNAL_TOPICS}
    outsiders = {
        "tenant": await create_user(bootstrap, admin, f"tenant-{secrets.token_hex(3)}"),
        "tool": await create_user(bootstrap, admin, f"tool-{secrets.token_hex(3)}"),
    }
    wrong = scram("admin-cli", secrets.token_urlsafe(24))
    for short, topic in full.items():
        results[f"no-credentials produce {short}"] = await produce(bootstrap, {}, topic)
        results[f"wrong-password produce {short}"] = await produce(bootstrap, wrong, topic)
        for who, auth in outsiders.items():
            results[f"{who} principal produce {short}"] = await produce(bootstrap, auth, topic)
        for name, component in components.items():
            if name not in writers.get(short, ()) and name != "admin-cli":
                results[f"{name} (not a writer) produce {short}"] = await produce(bootstrap, component, topic)
    results["no-credentials read runs.journal"] = await consume_any(bootstrap, {}, full["runs.journal"])
    results["tool principal read runs.journal"] = await consume_any(bootstrap, outsiders["tool"], full["runs.journal"])
    results["tool principal grants itself WRITE on tenants"] = await grant_self(
        bootstrap, outsiders["tool"], outsiders["tool"]["sasl.username"], full["tenants"]
    )
    if "tool-executor" in components:
        # Another principal's password (a throwaway user's: the admin's would end the run if it worked).
        results["tool-executor resets another principal's password"] = await reset_password(
            bootstrap, components["tool-executor"], outsiders["tenant"]["sasl.username"], secrets.token_urlsafe(24)
        )
        results["tool-executor joins the orchestrator's group"] = await join_group(
            bootstrap, components["tool-executor"], full["runs.journal"], f"{full['runs.journal']}.orchestrator"
        )
    return results
