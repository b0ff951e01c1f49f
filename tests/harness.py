"""Setting up an isolated deployment for a test module: its own home, topic prefix and scenarios."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from agentstream.config import ModelSettings, Settings
from agentstream.stack import ensure_topics


async def isolated_settings(
    kafka_bootstrap: str, home: Path, prefix: str, scenarios: dict[str, dict[str, Any]] | None = None
) -> tuple[Settings, Path]:
    """Settings with a unique topic prefix (topics created) and a folder of scenario files."""
    scenario_dir = home / "scenarios"
    scenario_dir.mkdir(parents=True, exist_ok=True)
    for name, body in (scenarios or {}).items():
        (scenario_dir / f"{name}.json").write_text(json.dumps({"name": name, **body}))
    settings = Settings(kafka_bootstrap, f"{prefix}{uuid.uuid4().hex[:8]}", home / "home", ModelSettings())
    settings.home.mkdir(parents=True, exist_ok=True)
    await ensure_topics(settings)
    return settings, scenario_dir
