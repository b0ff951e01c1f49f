"""Start-up behaviour: Kafka unreachable gives one clear message and keeps retrying, a missing topic
is named, and a deployment that fails to come up leaves no process behind (the README's commands
run by CI, and secrets kept out of the settings' repr: tests/unit/test_readme_and_settings.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agentstream.config import ModelSettings, Settings
from agentstream.localkafka import free_port
from agentstream.process import wait_for_kafka
from agentstream.stack import Deployment


async def test_unreachable_kafka_says_so_once_and_retries(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(f"127.0.0.1:{free_port()}", "x", tmp_path, ModelSettings())
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(wait_for_kafka(settings, "x.runs.journal"), timeout=9)
    err = capsys.readouterr().err
    assert err.count("is unreachable; retrying every 2s") == 1, err
    assert settings.bootstrap_servers in err


async def test_missing_topic_is_named(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(wait_for_kafka(settings, "no.such.topic"), timeout=4)
    assert "topic no.such.topic does not exist yet: run `agentstream topics create`" in capsys.readouterr().err


async def test_a_deployment_that_fails_to_come_up_leaves_no_process_behind(settings: Settings) -> None:
    deployment = Deployment(settings, wait_tools=("no_such_tool",), wait_tools_s=3.0)
    with pytest.raises(TimeoutError, match="no_such_tool"):
        async with deployment:
            pass
    assert deployment.procs is not None and deployment.procs.procs
    assert all(p.poll() is not None for p in deployment.procs.procs.values())
    assert deployment.model.proc is not None and deployment.model.proc.poll() is not None
