"""The registry's sink: the compacted topics worth auditing beside the journal (tenants and their
keys, the tool registry, operator controls) into one Iceberg table per topic, through the same
converter as the journal. A compacted topic keeps only each key's latest record; the warehouse
keeps every one, so it holds the history compaction erases (who changed a budget, when a key
was revoked, every version of a tool's registration).

Approvals and costs need no sink of their own: they are journal events (ApprovalRequested and
ApprovalDecided, BudgetReserved and BudgetSettled) and land in audit.events."""

from __future__ import annotations

from pathlib import Path

from agentstream.connect.catalog import AuditTable
from agentstream.connect.sink import IcebergSink, converter_config, dead_letter_config
from agentstream.topics import CATALOG, CONTROL

REGISTRY_CONNECTOR = "registry"
TENANTS = "tenants"  # the topic (agentstream/tenancy/directory.py names it the same)
# Connect's own SMT stamps each row with the record's timestamp and its topic; the topic routes
# it to its table (Iceberg's `route-field`), so any type a topic gains lands in that topic's table.
TIME_FIELD = "record_time"
TOPIC_FIELD = "topic"
# Each topic's table, partitioned by day like the journal (retention drops whole files) and by its
# tenant: every tenants record's, a policy's or budget's (null for a kill or tool switch: their
# target says whom they stop), a tool's owner ("" for the platform's). Created up front
# (connect/catalog.py): auto-created, a table takes its partitioning from its first record only if
# that record has the columns, and the control topic's may be a tool switch.
TABLES: dict[str, AuditTable] = {
    TENANTS: AuditTable("audit.tenants", TIME_FIELD, "tenant_id", ("event_id", "event_type", TOPIC_FIELD)),
    CATALOG: AuditTable("audit.tools", TIME_FIELD, "owner", ("event_id", "event_type", TOPIC_FIELD)),
    CONTROL: AuditTable("audit.controls", TIME_FIELD, "tenant_id", ("event_id", "event_type", TOPIC_FIELD)),
}
# What never reaches the warehouse from these topics (the converter's `drop.fields`):
# - key_hash (ApiKeyIssued): the verifier the gateway matches a presented key against (a SHA-256
#   of the key): credential material, and nothing an audit needs (key_id names the key).
# - transport_json (ToolRegistered): how to reach the tool's server, which may carry secret
#   values: a stdio server's `env` (where operators put API tokens), its `args`, a URL with
#   userinfo or a token in its query. `source` ("stdio:<server>", "http:<server>") and `egress`
#   say where a tool runs without them. `secrets` is kept: it names a tenant's secrets, never
#   their values (sealed on the secrets topic, which is not sunk).
DROPPED_FIELDS = ("key_hash", "transport_json")


def dlq_topic(topic_prefix: str) -> str:
    return f"{topic_prefix}.connect.registry-dlq"


def route_regex(topic: str) -> str:
    """A Java regex matching exactly this topic name (`\\Q...\\E`: its dots are literal)."""
    return f"\\Q{topic}\\E"


def registry_sink(
    topic_prefix: str, warehouse: Path, commit_interval_s: float, extra: dict[str, str] | None = None
) -> IcebergSink:
    topics = {name: f"{topic_prefix}.{name}" for name in TABLES}
    config = {
        **converter_config(DROPPED_FIELDS),
        "transforms": "stamp",
        # A tombstone (null value) passes this transform unchanged; the sink writes no row for it
        # (no route value), and the records before it stay in the warehouse.
        "transforms.stamp.type": "org.apache.kafka.connect.transforms.InsertField$Value",
        "transforms.stamp.timestamp.field": TIME_FIELD,
        "transforms.stamp.topic.field": TOPIC_FIELD,
        "iceberg.tables.route-field": TOPIC_FIELD,
        # One sparse table per topic: a field another type of the same topic lacks is null there.
        "iceberg.tables.schema-force-optional": "true",
        **dead_letter_config(dlq_topic(topic_prefix)),
    }
    for name, table in TABLES.items():
        config[f"iceberg.table.{table.name}.route-regex"] = route_regex(topics[name])
        # The same as created up front, should a table be dropped and auto-created again.
        config[f"iceberg.table.{table.name}.partition-by"] = f"day({TIME_FIELD}),{table.tenant_field}"
    tables = ",".join(table.name for table in TABLES.values())
    return IcebergSink(
        REGISTRY_CONNECTOR, tuple(topics.values()), tables, warehouse, commit_interval_s, {**config, **(extra or {})}
    )
