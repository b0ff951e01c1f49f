"""Shared fixtures. The broker is session-scoped and real: KAFKA_BOOTSTRAP_SERVERS if set, else
testcontainers' Kafka when a Docker engine answers, else the embedded local Apache Kafka."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agentstream.config import ModelSettings, Settings
from agentstream.localkafka import LocalKafka, free_port
from agentstream.stack import ensure_topics


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
async def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    kafka = LocalKafka(tmp_path_factory.mktemp("kafka"), port=free_port(), controller_port=free_port())
    await kafka.start()
    try:
        yield kafka.bootstrap
    finally:
        await kafka.stop()


@pytest.fixture
async def settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    """Settings for one test: its own topic prefix (isolated topics) and its own home directory."""
    s = Settings(
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}",
        home=tmp_path / "home",
        model=ModelSettings(),
    )
    s.home.mkdir(parents=True)
    await ensure_topics(s)
    return s


@pytest.fixture
def scenarios_dir(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "scenarios"
    d.mkdir()
    yield d
