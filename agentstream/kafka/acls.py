"""ACLs generated from topics.yaml: what each component's principal may do, applied by
`agentstream topics create` and compared by `agentstream topics verify`.

A listed writer gets WRITE and DESCRIBE on the topic (WRITE on any topic is also what the broker
asks of an idempotent producer's InitProducerId since KIP-679); a listed reader gets READ and
DESCRIBE. A processor's consumer group is `<journal topic>.<component>` (the runtime's naming),
so each principal may use only the groups under its own PREFIXED name: one component cannot join
another's group and take its partitions. Nothing else is granted, and the broker refuses whatever
no ACL allows (`allow.everyone.if.no.acl.found=false`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from agentstream.kafka.auth import ADMIN, CONNECT, ENGINE, PROCESSORS
from agentstream.topics import JOURNAL, TopicSpec

SECURITY_DISABLED = 54  # the broker runs without an authorizer
# The group ids of the readers that assign partitions (table readers, the journal client, the
# gateway's projection): shared names, outside any deployment's prefix.
ASSIGN_ONLY_GROUPS = ("agentstream-table-reader", "agentstream-reader", "agentstream-gateway")


class AclError(RuntimeError):
    def __init__(self, message: str, *, security_disabled: bool = False) -> None:
        super().__init__(message)
        self.security_disabled = security_disabled


@dataclass(frozen=True, order=True)
class Grant:
    principal: str  # a component name; the Kafka principal is User:<name>
    resource: str  # "TOPIC" or "GROUP"
    pattern: str  # "LITERAL" or "PREFIXED"
    name: str
    operation: str  # "READ", "WRITE", "DESCRIBE"

    def binding(self) -> AclBinding:
        return AclBinding(
            ResourceType[self.resource], self.name, ResourcePatternType[self.pattern],
            f"User:{self.principal}", "*", AclOperation[self.operation], AclPermissionType.ALLOW,
        )  # fmt: skip

    def __str__(self) -> str:
        return f"User:{self.principal} {self.operation} on {self.resource} {self.pattern.lower()} {self.name!r}"


def group_prefix(specs: Mapping[str, TopicSpec], component: str) -> str:
    return f"{specs[JOURNAL].name}.{component}"


def expected_grants(specs: Mapping[str, TopicSpec]) -> set[Grant]:
    grants: set[Grant] = set()
    for spec in specs.values():
        for writer in spec.writers:
            if writer != ADMIN:  # the admin is a super user; an ACL would only hide that
                grants |= {Grant(writer, "TOPIC", "LITERAL", spec.name, op) for op in ("WRITE", "DESCRIBE")}
        for reader in spec.readers:
            if reader != ADMIN:
                grants |= {Grant(reader, "TOPIC", "LITERAL", spec.name, op) for op in ("READ", "DESCRIBE")}
    for component in (*PROCESSORS, ENGINE):
        grants.add(Grant(component, "GROUP", "PREFIXED", group_prefix(specs, component), "READ"))
    # Readers that assign partitions themselves still carry a group.id, and librdkafka looks up its
    # coordinator (which needs DESCRIBE on the group); they never join or commit, so no READ.
    for component in {*PROCESSORS, ENGINE, "gateway"}:
        grants |= {Grant(component, "GROUP", "LITERAL", group, "DESCRIBE") for group in ASSIGN_ONLY_GROUPS}
    return grants | connect_grants(specs)


def connect_prefix(specs: Mapping[str, TopicSpec]) -> str:
    """What the Connect worker names its groups (the worker's own, each sink's, the Iceberg control
    group) and its transactional ids (the Iceberg sink's commits) with: `<prefix>.connect`."""
    return specs[JOURNAL].name.removesuffix(JOURNAL) + CONNECT


def connect_grants(specs: Mapping[str, TopicSpec]) -> set[Grant]:
    prefix = connect_prefix(specs)
    groups = {Grant(CONNECT, "GROUP", "PREFIXED", prefix, op) for op in ("READ", "DESCRIBE")}
    return groups | {Grant(CONNECT, "TRANSACTIONAL_ID", "PREFIXED", prefix, op) for op in ("WRITE", "DESCRIBE")}


def _grant_of(binding: AclBinding) -> Grant | None:
    if binding.permission_type != AclPermissionType.ALLOW or not binding.principal.startswith("User:"):
        return None
    return Grant(
        binding.principal[len("User:") :], _enum_name(binding.restype), _enum_name(binding.resource_pattern_type),
        binding.name, _enum_name(binding.operation),
    )  # fmt: skip


def _enum_name(value: object) -> str:
    return str(getattr(value, "name", value))


def _admin(bootstrap: str, extra: Mapping[str, str] | None) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "log_level": "0", **(extra or {})})


def _raise(exc: KafkaException, doing: str) -> None:
    error = exc.args[0]
    if error.code() == SECURITY_DISABLED:
        raise AclError(
            f"the broker has no authorizer, so it cannot {doing}: enable one (see the README)", security_disabled=True
        ) from None
    raise AclError(f"the broker refused to {doing}: {error.str()}") from None


def _bindings_on(admin: AdminClient, resource: ResourceType, name: str, pattern: ResourcePatternType) -> list[Grant]:
    filt = AclBindingFilter(
        resource, name, pattern, None, None, AclOperation.ANY, AclPermissionType.ANY  # type: ignore[arg-type]
    )  # fmt: skip
    try:
        found = admin.describe_acls(filt, request_timeout=15).result()
    except KafkaException as exc:
        _raise(exc, "list ACLs")
    return [g for g in (_grant_of(b) for b in found) if g is not None]


def _actual_sync(bootstrap: str, extra: Mapping[str, str] | None, grants: Iterable[Grant]) -> set[Grant]:
    """The ALLOW grants on every resource the expected grants name."""
    admin = _admin(bootstrap, extra)
    # MATCH: every ACL that applies to the resource, the wildcard and any PREFIXED one included, so
    # a broad grant added by hand shows up as drift.
    actual: set[Grant] = set()
    for resource, name in sorted({(g.resource, g.name) for g in grants}):
        actual |= set(_bindings_on(admin, ResourceType[resource], name, ResourcePatternType.MATCH))
    return actual


def _apply_sync(bootstrap: str, extra: Mapping[str, str] | None, grants: set[Grant]) -> list[Grant]:
    missing = sorted(grants - _actual_sync(bootstrap, extra, grants))
    if not missing:
        return []
    admin = _admin(bootstrap, extra)
    for fut in admin.create_acls([g.binding() for g in missing], request_timeout=30).values():
        try:
            fut.result()
        except KafkaException as exc:
            _raise(exc, "create ACLs")
    # The controller acknowledges before the broker's authorizer has replayed the change: wait
    # until the broker answers with them, so a component started next is not refused meanwhile.
    deadline = time.monotonic() + 15.0
    while not grants <= _actual_sync(bootstrap, extra, grants):
        if time.monotonic() > deadline:
            raise AclError("the broker did not show the ACLs it acknowledged within 15s")
        time.sleep(0.05)
    return missing


async def apply_acls(
    bootstrap: str, specs: Mapping[str, TopicSpec], extra: Mapping[str, str] | None = None
) -> list[Grant]:
    """Creates the ACLs topics.yaml implies that the broker lacks; returns what it created."""
    return await asyncio.to_thread(_apply_sync, bootstrap, extra, expected_grants(specs))


@dataclass(frozen=True)
class AclDrift:
    grant: Grant
    what: str  # "missing" (expected, not on the broker) or "unexpected" (on the broker, not in topics.yaml)

    def __str__(self) -> str:
        return f"ACL {self.what}: {self.grant}"


async def acl_drift(
    bootstrap: str, specs: Mapping[str, TopicSpec], extra: Mapping[str, str] | None = None
) -> list[AclDrift]:
    expected = expected_grants(specs)
    actual = await asyncio.to_thread(_actual_sync, bootstrap, extra, expected)
    return [AclDrift(g, "missing") for g in sorted(expected - actual)] + [
        AclDrift(g, "unexpected") for g in sorted(actual - expected)
    ]
