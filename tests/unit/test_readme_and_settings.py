"""What a new user reads and configures, without a broker: CI runs exactly the README's test command,
and secrets stay out of the settings' repr (startup against a broker: tests/e2e/test_startup.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agentstream.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", readme, flags=re.S)
    first_two = [b.strip() for b in blocks[:2]]
    assert len(first_two) == 2 and "agentstream demo" in first_two[0]
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert first_two[1] in ci_lines, "the README's test command must be the line .ci/run executes"


def test_secrets_stay_out_of_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTSTREAM_MODEL_API_KEY", "sk-very-secret")
    settings = Settings.from_env()
    assert settings.model.api_key == "sk-very-secret"
    assert "sk-very-secret" not in repr(settings)
