"""Settings of the platform around the processors: the Kafka connection, the home directory, each
process's own knobs, the embedded broker, the egress exemptions and the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, IPvAnyNetwork
from pydantic_settings import NoDecode

from agentstream.settings.base import ComponentSettings, split_list, split_pairs, variable

LOCAL_BOOTSTRAP = "127.0.0.1:19092"
# A single-node broker sharing a small machine with its clients: the C1 JIT alone warms up in
# seconds and, measured here, halved the broker's CPU per journal step against the default tiered
# C2 compilation, which kept a core busy compiling for the first minute of every benchmark.
DEFAULT_JVM_OPTS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


class KafkaSettings(ComponentSettings):
    COMPONENT = "kafka"

    bootstrap_servers: str | None = variable(
        None, "KAFKA_BOOTSTRAP_SERVERS",
        "any Kafka-protocol cluster (`host:port,...`); when set, no local broker is started",
        shown_default=f"unset: the embedded broker at `{LOCAL_BOOTSTRAP}`",
    )  # fmt: skip
    topic_prefix: str = variable(
        "agentstream", "AGENTSTREAM_TOPIC_PREFIX", "prefix of every topic name", pattern=r"^[A-Za-z0-9._-]+$"
    )
    extra: Annotated[dict[str, str], NoDecode, BeforeValidator(split_pairs(";"))] = variable(
        {}, "AGENTSTREAM_KAFKA_EXTRA",
        "extra librdkafka settings, `key=value;key=value` (e.g. `security.protocol=SASL_SSL;ssl.ca.location=...`)",
        repr=False,
    )  # fmt: skip
    sasl_file: Path | None = variable(
        None, "AGENTSTREAM_KAFKA_SASL_FILE",
        "this process's SCRAM credentials (a 0600 JSON `{username, password, mechanism}`); the stack sets it "
        "for every process it spawns, each its own",
        shown_default="the admin's file under `<home>/keys/kafka/` (local broker)",
    )  # fmt: skip
    credentials_dir: Path | None = variable(
        None, "AGENTSTREAM_KAFKA_CREDENTIALS_DIR",
        "a directory of `<component>.json` credentials, for spawning components (`topics create` creates these users)",
        shown_default="`<home>/keys/kafka` with the local broker, else unset",
    )  # fmt: skip


class HomeSettings(ComponentSettings):
    COMPONENT = "platform"

    home: Path | None = variable(
        None, "AGENTSTREAM_HOME", "keys, state stores, logs, local broker data, demo bank",
        shown_default="`$XDG_DATA_HOME/agentstream`, else `~/.local/share/agentstream`",
    )  # fmt: skip
    xdg_data_home: Path | None = variable(
        None, "XDG_DATA_HOME", "where the default home lives", shown_default="`~/.local/share`"
    )

    def resolved_home(self) -> Path:
        # A fixed per-user home, never relative to the working directory.
        data_home = self.xdg_data_home or Path.home() / ".local/share"
        return (self.home or data_home / "agentstream").resolve()


class ProcessSettings(ComponentSettings):
    COMPONENT = "process"

    log_level: Annotated[LogLevel, BeforeValidator(_upper)] = variable(
        "INFO", "AGENTSTREAM_LOG_LEVEL", "log level of processor and gateway processes"
    )
    profile_dir: Path | None = variable(
        None, "AGENTSTREAM_PROFILE_DIR", "a directory: each processor process writes a cProfile of itself there when it stops"
    )  # fmt: skip
    layout: Literal["engine", "separate"] | None = variable(
        None, "AGENTSTREAM_LAYOUT",
        "`engine`: every processor core in one process, handing events over in-process; `separate`: one process each",
        shown_default="`engine` for `dev`/`demo`, `separate` for the test harness",
    )  # fmt: skip
    journal_auth: bool = variable(
        True, "AGENTSTREAM_JOURNAL_AUTH",
        "false turns the journal writer checks off: only for a throwaway control deployment of the security bench",
    )  # fmt: skip
    chaos: Annotated[dict[str, float], NoDecode, BeforeValidator(split_pairs(","))] = variable(
        {}, "AGENTSTREAM_CHAOS",
        "crash tests only: `point=probability,...` (e.g. `tool_after_effect=0.05`): the process kills itself there",
    )  # fmt: skip


class ResourceSettings(ComponentSettings):
    COMPONENT = "resources"

    schemas_dir: Path | None = variable(
        None, "AGENTSTREAM_SCHEMAS_DIR", "the Avro schemas (`*.avsc` and `history/`) events are encoded with",
        shown_default="the packaged `schemas/`",
    )  # fmt: skip
    topics_file: Path | None = variable(
        None, "AGENTSTREAM_TOPICS_FILE", "the topic declarations (names, partitions, config, writers and readers)",
        shown_default="the packaged `topics.yaml`",
    )  # fmt: skip
    journal_record_budget_bytes: int = variable(
        1_000_000, "AGENTSTREAM_JOURNAL_RECORD_BUDGET_BYTES",
        "the largest journal record a processor writes (bytes), capped by the producer's and the journal topic's "
        "8 MiB; a model request over it (less 64 KiB for the event) fails its run `context_too_large`. At most "
        "4 MiB: a run's state holds its whole conversation, up to about twice this in escaped text, in one 8 MiB "
        "changelog record. Set the same value for every processor",
        ge=256 * 1024 + 64 * 1024, le=4 * 1024 * 1024,
    )  # fmt: skip


class LocalBrokerSettings(ComponentSettings):
    COMPONENT = "local broker"

    cache_dir: Path | None = variable(
        None, "AGENTSTREAM_CACHE", "where the embedded broker's Kafka jars are downloaded to",
        shown_default="`~/.cache/agentstream`",
    )  # fmt: skip
    jvm_opts: str = variable(DEFAULT_JVM_OPTS, "AGENTSTREAM_KAFKA_JVM_OPTS", "JVM flags of the embedded broker")

    def jar_cache(self) -> Path:
        return self.cache_dir or Path.home() / ".cache" / "agentstream"


class EgressSettings(ComponentSettings):
    COMPONENT = "egress"

    allow_private: Annotated[tuple[IPvAnyNetwork, ...], NoDecode, BeforeValidator(split_list)] = variable(
        (), "AGENTSTREAM_EGRESS_ALLOW_PRIVATE",
        "operator only: comma-separated CIDRs exempt from the internal-address rules (tests, air-gapped installs); "
        "unset in production",
    )  # fmt: skip


class CliSettings(ComponentSettings):
    COMPONENT = "cli"

    api_key: str | None = variable(
        None, "AGENTSTREAM_API_KEY",
        "use the run API with this key for `run`, `runs show/resume/cancel` (unset: Kafka directly)",
        repr=False,
    )  # fmt: skip
    api_url: str = variable("http://127.0.0.1:8080", "AGENTSTREAM_API_URL", "the run API's base URL")
    user: str = variable("operator", "USER", "who the CLI records as deciding approvals and setting budgets")
