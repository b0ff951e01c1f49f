"""The settings a deployment's code passes around: the Kafka connection and home, and each
processor's component settings. Every value comes from the settings model in `agentstream/settings/`
(one class per component, each field one environment variable); nothing else reads os.environ."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from agentstream.kafka.auth import ADMIN, read_principal
from agentstream.settings import (
    LOCAL_BOOTSTRAP,
    CostSettings,
    GatewaySettings,
    HomeSettings,
    KafkaSettings,
    KvSettings,
    ModelSettings,
    load,
)

__all__ = ["LOCAL_BOOTSTRAP", "ModelSettings", "Settings", "local_credentials_dir", "process_kafka_extra"]


def local_credentials_dir(home: Path) -> Path:
    """The local broker's principals: beside the platform's other keys (`<home>/keys`)."""
    return home / "keys" / "kafka"


def process_kafka_extra(fallback_sasl_file: Path | None = None, kafka: KafkaSettings | None = None) -> dict[str, str]:
    """This process's librdkafka extras: AGENTSTREAM_KAFKA_EXTRA, plus the SASL principal of its
    credentials file (AGENTSTREAM_KAFKA_SASL_FILE, else `fallback_sasl_file` if that exists)."""
    kafka = kafka or load(KafkaSettings)
    extra = dict(kafka.extra)
    sasl_file = kafka.sasl_file
    if sasl_file is None and fallback_sasl_file is not None and fallback_sasl_file.exists():
        sasl_file = fallback_sasl_file
    if sasl_file is not None:
        principal = read_principal(sasl_file)
        # AGENTSTREAM_KAFKA_EXTRA wins: e.g. security.protocol=SASL_SSL and its CA for production.
        extra = {**principal.client_config(extra.get("security.protocol", "SASL_PLAINTEXT")), **extra}
    return extra


@dataclass(frozen=True)
class Settings:
    """Built by `from_env` in every process; built directly (tests, benchmarks), the fields not given
    are this process's environment's, as `from_env` would read them."""

    bootstrap_servers: str
    topic_prefix: str
    home: Path
    model: ModelSettings
    # Extra librdkafka settings: this process's SASL principal (from its credentials file) and, for
    # a production cluster, whatever AGENTSTREAM_KAFKA_EXTRA adds ("key=value;key=value": TLS, ...).
    # repr=False: it holds a password.
    kafka_extra: dict[str, str] = field(default_factory=lambda: process_kafka_extra(), repr=False)
    # Where each component's Kafka credentials file lives, for spawning processes (each is handed
    # only its own). Default: `<home>/keys/kafka` with the local broker, none with an external one
    # unless AGENTSTREAM_KAFKA_CREDENTIALS_DIR names a directory of `<component>.json` files.
    kafka_credentials_dir: Path | None = field(default_factory=lambda: load(KafkaSettings).credentials_dir)
    gateway: GatewaySettings = field(default_factory=lambda: load(GatewaySettings))
    cost: CostSettings = field(default_factory=lambda: load(CostSettings))
    kv: KvSettings = field(default_factory=lambda: load(KvSettings))
    # No KAFKA_BOOTSTRAP_SERVERS: the platform runs (and may start) its embedded broker.
    uses_local_broker: bool = field(default_factory=lambda: load(KafkaSettings).bootstrap_servers is None)
    # Which instance of a processor this process is (`agentstream process NAME --instance N`), for
    # the few stores that live outside the partition stores and must not be shared by two instances.
    instance: str = "0"

    @property
    def state_dir(self) -> Path:
        return self.home / "state"

    @property
    def bank_path(self) -> Path:
        return self.home / "demo-bank.sqlite"

    def as_component(self, component: str) -> Settings:
        """These settings with `component`'s own principal in place of the admin's fallback: a
        processor or gateway started by hand on the local broker must not run as a super user."""
        if self.kafka_extra.get("sasl.username") != ADMIN or self.kafka_credentials_dir is None:
            return self  # its own file was given (or an external cluster's settings): keep them
        path = self.kafka_credentials_dir / f"{component}.json"
        if not path.exists():
            return self
        own = read_principal(path).client_config(self.kafka_extra.get("security.protocol", "SASL_PLAINTEXT"))
        return replace(self, kafka_extra={**self.kafka_extra, **own})

    @staticmethod
    def from_env() -> Settings:
        """Every component's settings from this process's environment; a value that does not fit
        its type raises `SettingsError` naming the variable."""
        kafka = load(KafkaSettings)
        home = load(HomeSettings).resolved_home()
        local = kafka.bootstrap_servers is None
        credentials_dir = kafka.credentials_dir or (local_credentials_dir(home) if local else None)
        # A spawned component is handed its own file; the CLI on the local broker is the admin.
        fallback = None if credentials_dir is None else credentials_dir / f"{ADMIN}.json"
        return Settings(
            bootstrap_servers=kafka.bootstrap_servers or LOCAL_BOOTSTRAP,
            topic_prefix=kafka.topic_prefix,
            home=home,
            model=load(ModelSettings),
            kafka_extra=process_kafka_extra(fallback, kafka),
            kafka_credentials_dir=credentials_dir,
            gateway=load(GatewaySettings),
            cost=load(CostSettings),
            kv=load(KvSettings),
            uses_local_broker=local,
        )
