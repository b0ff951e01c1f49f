"""Settings from the environment. Everything a deployment changes is here; nothing else reads os.environ."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

LOCAL_BOOTSTRAP = "127.0.0.1:19092"


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
    max_concurrency: int = 32


@dataclass(frozen=True)
class Settings:
    bootstrap_servers: str
    topic_prefix: str
    home: Path
    model: ModelSettings
    # Extra librdkafka settings for a production cluster (SASL, TLS), "key=value;key=value".
    kafka_extra: dict[str, str] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        return self.home / "state"

    @property
    def bank_path(self) -> Path:
        return self.home / "demo-bank.sqlite"

    @property
    def uses_local_broker(self) -> bool:
        return "KAFKA_BOOTSTRAP_SERVERS" not in os.environ

    @staticmethod
    def from_env() -> Settings:
        extra: dict[str, str] = {}
        for item in _env("AGENTSTREAM_KAFKA_EXTRA", "").split(";"):
            if "=" in item:
                key, value = item.split("=", 1)
                extra[key.strip()] = value.strip()
        return Settings(
            bootstrap_servers=_env("KAFKA_BOOTSTRAP_SERVERS", LOCAL_BOOTSTRAP),
            topic_prefix=_env("AGENTSTREAM_TOPIC_PREFIX", "agentstream"),
            home=Path(_env("AGENTSTREAM_HOME", ".agentstream")).resolve(),
            model=ModelSettings(
                provider=_env("AGENTSTREAM_MODEL_PROVIDER", "openai"),
                base_url=_env("AGENTSTREAM_MODEL_BASE_URL", ""),
                api_key=os.environ.get("AGENTSTREAM_MODEL_API_KEY") or None,
                stream=_env("AGENTSTREAM_MODEL_STREAM", "0") in ("1", "true", "yes"),
                timeout_s=float(_env("AGENTSTREAM_MODEL_TIMEOUT_S", "60")),
                max_attempts=int(_env("AGENTSTREAM_MODEL_MAX_ATTEMPTS", "4")),
                max_concurrency=int(_env("AGENTSTREAM_MODEL_CONCURRENCY", "32")),
            ),
            kafka_extra=extra,
        )
