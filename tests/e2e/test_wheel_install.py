"""The package works installed, not only from a checkout: the wheel is built from the source tree,
installed into a fresh virtual environment, and the installed `agentstream demo` runs the README's
demo from a directory outside the repository (its own broker, topics, model and processors), so
every file it needs (schemas, topics.yaml, the broker's build files) must come from the wheel."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from agentstream.config import LOCAL_BOOTSTRAP

ROOT = Path(__file__).resolve().parents[2]
# What a wheel is built from: the project file and the folders the package links to.
SOURCES = ("pyproject.toml", "README.md", "agentstream", "processors", "tools", "schemas", "topics.yaml", "infra")


def _run(
    cmd: list[str], timeout_s: float, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False, cwd=cwd, env=env)
    assert done.returncode == 0, (
        f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done


def _build_wheel(tmp: Path) -> Path:
    # From a copy: an in-tree build reuses build/, whose stale modules would end up in the wheel.
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "cache"))  # fmt: skip
        else:
            shutil.copy2(ROOT / name, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(src), "-w", str(tmp / "dist")], 300)
    (wheel,) = (tmp / "dist").glob("agentstream-*.whl")
    return wheel


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1.0):
        return True
    return False


def _clean_env(venv: Path, home: Path) -> dict[str, str]:
    """A new user's shell with the venv activated: none of this test session's settings (its
    broker, credentials, topic prefix, PYTHONPATH) leak into the demo; only the jar cache stays."""
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("AGENTSTREAM_", "KAFKA_")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")}  # fmt: skip
    cache = os.environ.get("AGENTSTREAM_CACHE")
    return {**keep, **({"AGENTSTREAM_CACHE": cache} if cache else {}), "AGENTSTREAM_HOME": str(home),
            "VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}{os.pathsep}{keep.get('PATH', '')}"}  # fmt: skip


@pytest.mark.timeout(900)
def test_the_wheel_installs_into_a_fresh_venv_and_runs_the_demo(tmp_path: Path) -> None:
    port = int(LOCAL_BOOTSTRAP.rsplit(":", 1)[1])
    if _listening(port):
        pytest.skip(f"port {port} is in use (an `agentstream dev`?): the demo's own broker needs it")
    t0 = time.monotonic()
    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"agentstream", wheel.name.split("-py3")[0] + ".dist-info"}
    for shipped in ("resources/topics.yaml", "resources/schemas/RunRequested.avsc",
                    "resources/schemas/history/RunRequested.v1.avsc", "resources/infra/kafka/pom.xml",
                    "resources/infra/kafka/log4j.properties", "resources/infra/connect/iceberg-aws/pom.xml",
                    "processors/catalog.py", "tools/replay.py"):  # fmt: skip
        assert f"agentstream/{shipped}" in names, f"{shipped} is not in the wheel"
    built = time.monotonic()

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], 120)
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)], 600)
    installed = time.monotonic()

    elsewhere = tmp_path / "elsewhere"  # outside the repository: nothing can be found relative to it
    elsewhere.mkdir()
    env = _clean_env(venv, tmp_path / "home")
    where = _run([str(venv / "bin" / "python"), "-c",
                  "import agentstream.resources as r; print(r.resource_path('schemas'))"],
                 60, cwd=elsewhere, env=env).stdout.strip()  # fmt: skip
    assert where.startswith(str(venv)), f"the installed package reads its schemas from {where}"
    demo = _run([str(venv / "bin" / "agentstream"), "demo"], 300, cwd=elsewhere, env=env)
    assert re.search(r"status\s+completed", demo.stdout), demo.stdout[-3000:]
    assert "reconstruct it from the journal: agentstream runs show run_" in demo.stdout
    done = time.monotonic()
    print(f"wheel {built - t0:.1f}s, venv and install {installed - built:.1f}s, demo {done - installed:.1f}s")
