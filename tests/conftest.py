"""Shared fixtures. The broker is session-scoped and real: KAFKA_BOOTSTRAP_SERVERS if set (with
the admin's SASL settings in AGENTSTREAM_KAFKA_EXTRA or AGENTSTREAM_KAFKA_SASL_FILE, on a broker
with an authorizer), else the embedded local Apache Kafka, which authenticates (SCRAM-SHA-512) and
authorizes (ACLs from topics.yaml) as it does for a user."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agentstream.config import ModelSettings, Settings, process_kafka_extra
from agentstream.kafka.auth import ADMIN, CREDENTIALS_DIR_ENV, SASL_FILE_ENV
from agentstream.localkafka import LocalKafka, free_port
from agentstream.stack import ensure_topics
from tests.blobs_fixture import seaweed_s3  # noqa: F401  (registers the session's S3 server fixture)

# Model-call retries at a fifth of the production wait: the tests check what retries do, not how
# long a provider blip lasts (a process started by a test inherits this).
os.environ.setdefault("AGENTSTREAM_MODEL_RETRY_BASE_S", "0.2")


@dataclass(frozen=True)
class TestBroker:
    bootstrap: str
    # The admin principal's librdkafka settings (a super user on the broker).
    admin: dict[str, str] = field(repr=False)
    credentials_dir: Path | None
    local: LocalKafka | None = None


@pytest.fixture(scope="session")
async def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TestBroker]:
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield TestBroker(configured, process_kafka_extra(), Settings.from_env().kafka_credentials_dir)
        return
    base = tmp_path_factory.mktemp("kafka")
    kafka = LocalKafka(base / "broker", port=free_port(), controller_port=free_port(), credentials_dir=base / "keys")
    await kafka.start()
    # Everything this test process builds authenticates as the admin unless told otherwise:
    # Settings made directly, CLI commands run in-process, the raw clients of kafkahelpers. Spawned
    # processors get their own principal instead (stack.ProcessorProcesses).
    saved = {k: os.environ.get(k) for k in (SASL_FILE_ENV, CREDENTIALS_DIR_ENV)}
    os.environ[SASL_FILE_ENV] = str(kafka.credentials.path(ADMIN))
    os.environ[CREDENTIALS_DIR_ENV] = str(kafka.credentials.directory)
    try:
        yield TestBroker(kafka.bootstrap, kafka.admin_config(), kafka.credentials.directory, kafka)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        await kafka.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: TestBroker) -> str:
    return kafka_broker.bootstrap


@pytest.fixture
async def settings(kafka_broker: TestBroker, tmp_path: Path) -> Settings:
    """Settings for one test: its own topic prefix (isolated topics) and its own home directory."""
    s = Settings(
        bootstrap_servers=kafka_broker.bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}",
        home=tmp_path / "home",
        model=ModelSettings(),
        kafka_extra=dict(kafka_broker.admin),
        kafka_credentials_dir=kafka_broker.credentials_dir,
    )
    s.home.mkdir(parents=True)
    await ensure_topics(s)
    return s


@pytest.fixture
def scenarios_dir(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "scenarios"
    d.mkdir()
    yield d


LAYERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test with its layer, taken from the folder it lives in (tests/unit, ...), so
    `-m unit` and `pytest tests/unit` select the same tests."""
    for item in items:
        layer = next((part for part in item.path.parts if part in LAYERS), None)
        if layer is not None:
            item.add_marker(getattr(pytest.mark, layer))
