"""Setting up an isolated deployment for a test module: its own home, topic prefix and scenarios."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
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


def make_git_repo(repo: Path) -> Path:
    """A git repository with one commit ("first commit", README.md) and one untracked file."""
    repo.mkdir(parents=True)
    git = ["git", "-C", str(repo), "-c", "user.name=Test", "-c", "user.email=test@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "README.md").write_text("hello\n")
    subprocess.run([*git, "add", "README.md"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first commit"], check=True)
    (repo / "untracked.txt").write_text("new\n")
    return repo


# In a user namespace the repo's owner can map to a uid other than the git server's, and git then
# refuses the repo for "dubious ownership". The test repos are ours, so they are marked safe.
GIT_SAFE_ENV = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "safe.directory", "GIT_CONFIG_VALUE_0": "*"}


@contextlib.contextmanager
def emulator_processes(count: int, time_scale: float = 0.01) -> Iterator[dict[str, str]]:
    """`count` replica emulators, each its own process on a free port: replica name -> base URL."""
    procs: list[subprocess.Popen[bytes]] = []
    urls: dict[str, str] = {}
    try:
        for i in range(count):
            proc = subprocess.Popen(
                [sys.executable, "-m", "agentstream.doubles.replica_emulator", "--port", "0", "--replica-id", f"r{i}",
                 "--time-scale", str(time_scale)],
                stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
            procs.append(proc)
            assert proc.stdout is not None
            urls[f"r{i}"] = proc.stdout.readline().decode().split()[1]
        yield urls
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
