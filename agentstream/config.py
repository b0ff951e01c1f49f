"""Settings from the environment. Everything a deployment changes is here; nothing else reads os.environ."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from agentstream.kafka.auth import ADMIN, CREDENTIALS_DIR_ENV, SASL_FILE_ENV, read_principal

LOCAL_BOOTSTRAP = "127.0.0.1:19092"


def local_credentials_dir(home: Path) -> Path:
    """The local broker's principals: beside the platform's other keys (`<home>/keys`)."""
    return home / "keys" / "kafka"


def _credentials_env() -> Path | None:
    value = _env(CREDENTIALS_DIR_ENV, "")
    return Path(value) if value else None


def process_kafka_extra(fallback_sasl_file: Path | None = None) -> dict[str, str]:
    """This process's librdkafka extras: AGENTSTREAM_KAFKA_EXTRA, plus the SASL principal of its
    credentials file (AGENTSTREAM_KAFKA_SASL_FILE, else `fallback_sasl_file` if that exists)."""
    extra: dict[str, str] = {}
    for item in _env("AGENTSTREAM_KAFKA_EXTRA", "").split(";"):
        if "=" in item:
            key, value = item.split("=", 1)
            extra[key.strip()] = value.strip()
    sasl_file = _env(SASL_FILE_ENV, "")
    if not sasl_file and fallback_sasl_file is not None and fallback_sasl_file.exists():
        sasl_file = str(fallback_sasl_file)
    if sasl_file:
        principal = read_principal(Path(sasl_file))
        # AGENTSTREAM_KAFKA_EXTRA wins: e.g. security.protocol=SASL_SSL and its CA for production.
        extra = {**principal.client_config(extra.get("security.protocol", "SASL_PLAINTEXT")), **extra}
    return extra


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


@dataclass(frozen=True)
class ModelSettings:
    provider: str = "openai"  # "openai" (any Chat Completions server) or "anthropic"
    base_url: str = ""  # empty: the scripted model server that `dev` / `demo` start
    # Read from the environment only; repr=False keeps it out of logs and error messages.
    api_key: str | None = field(default=None, repr=False)
    stream: bool = False
    timeout_s: float = 60.0
    max_attempts: int = 4
    retry_base_s: float = 1.0  # the first retry waits 0.5-1 s, each later one twice as long
    max_concurrency: int = 32


@dataclass(frozen=True)
class Settings:
    bootstrap_servers: str
    topic_prefix: str
    home: Path
    model: ModelSettings
    # Extra librdkafka settings: this process's SASL principal (from its credentials file) and, for
    # a production cluster, whatever AGENTSTREAM_KAFKA_EXTRA adds ("key=value;key=value": TLS, ...).
    # repr=False: it holds a password.
    # Built directly (tests, benchmarks), it is this process's identity from the environment.
    kafka_extra: dict[str, str] = field(default_factory=lambda: process_kafka_extra(), repr=False)
    # Where each component's Kafka credentials file lives, for spawning processes (each is handed
    # only its own). Default: `<home>/keys/kafka` with the local broker, none with an external one
    # unless AGENTSTREAM_KAFKA_CREDENTIALS_DIR names a directory of `<component>.json` files.
    kafka_credentials_dir: Path | None = field(default_factory=lambda: _credentials_env())

    @property
    def state_dir(self) -> Path:
        return self.home / "state"

    @property
    def bank_path(self) -> Path:
        return self.home / "demo-bank.sqlite"

    @property
    def uses_local_broker(self) -> bool:
        return "KAFKA_BOOTSTRAP_SERVERS" not in os.environ

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
        # A fixed per-user home, never relative to the working directory.
        data_home = Path(_env("XDG_DATA_HOME", str(Path.home() / ".local/share")))
        home = Path(_env("AGENTSTREAM_HOME", str(data_home / "agentstream"))).resolve()
        local = "KAFKA_BOOTSTRAP_SERVERS" not in os.environ
        credentials_dir = _credentials_env() or (local_credentials_dir(home) if local else None)
        # A spawned component is handed its own file; the CLI on the local broker is the admin.
        fallback = None if credentials_dir is None else credentials_dir / f"{ADMIN}.json"
        extra = process_kafka_extra(fallback)
        return Settings(
            bootstrap_servers=_env("KAFKA_BOOTSTRAP_SERVERS", LOCAL_BOOTSTRAP),
            topic_prefix=_env("AGENTSTREAM_TOPIC_PREFIX", "agentstream"),
            home=home,
            kafka_credentials_dir=credentials_dir,
            model=ModelSettings(
                provider=_env("AGENTSTREAM_MODEL_PROVIDER", "openai"),
                base_url=_env("AGENTSTREAM_MODEL_BASE_URL", ""),
                api_key=os.environ.get("AGENTSTREAM_MODEL_API_KEY") or None,
                stream=_env("AGENTSTREAM_MODEL_STREAM", "0") in ("1", "true", "yes"),
                timeout_s=float(_env("AGENTSTREAM_MODEL_TIMEOUT_S", "60")),
                max_attempts=int(_env("AGENTSTREAM_MODEL_MAX_ATTEMPTS", "4")),
                retry_base_s=float(_env("AGENTSTREAM_MODEL_RETRY_BASE_S", "1.0")),
                max_concurrency=int(_env("AGENTSTREAM_MODEL_CONCURRENCY", "32")),
            ),
            kafka_extra=extra,
        )
