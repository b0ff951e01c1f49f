"""What the platform's JVM daemons share (the local broker, the Connect worker): their jars fetched
once from Maven Central by a pinned pom, the process spawned detached, and whether it still runs."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path


class JarFetchError(RuntimeError):
    """Maven is missing, or it could not fetch the pinned jars."""


async def fetch_jars(pom: Path, target: Path, what: str, *, hint: str = "", progress: bool = True) -> Path:
    """The runtime jars of `pom` in `target`, fetched once (`mvn dependency:copy-dependencies`);
    later calls return the folder. A folder is complete or absent: it is fetched beside and renamed."""
    marker = target / ".complete"
    if marker.exists():
        return target
    if shutil.which("mvn") is None:
        raise JarFetchError(f"Maven (mvn) is needed once to fetch {what}'s jars; install it{hint}")
    if progress:
        print(f"fetching {what}'s jars from Maven Central into {target} (once) ...", file=sys.stderr)
    # Per process: two processes fetching at once (parallel test workers on a fresh machine) each
    # build their own folder, and the first rename wins; the folder carries its marker when renamed.
    tmp = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    await run_mvn(pom, "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={tmp}", what=what)
    _install(tmp, target, marker.name)
    return target


def _install(fetched: Path, target: Path, marker: str) -> None:
    """Renames the fetched folder into place with its marker; a process that finished first wins."""
    (fetched / marker).write_text("ok\n")
    if target.exists() and not (target / marker).exists():
        shutil.rmtree(target, ignore_errors=True)  # left incomplete by an interrupted fetch
    try:
        fetched.rename(target)
    except OSError:
        shutil.rmtree(fetched, ignore_errors=True)
        if not (target / marker).exists():
            raise


async def run_mvn(pom: Path, *goals: str, what: str) -> None:
    if shutil.which("mvn") is None:
        raise JarFetchError(f"Maven (mvn) is needed to build {what}; install it")
    proc = await asyncio.create_subprocess_exec(
        "mvn", "-q", "-B", "-f", str(pom), *goals, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )  # fmt: skip
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise JarFetchError(f"mvn failed for {what}:\n{out.decode(errors='replace')[-2000:]}")


def spawn_daemon(cmd: list[str], output: Path) -> subprocess.Popen[bytes]:
    # Popen, not asyncio's subprocess: the daemon must outlive the event loop (and the CLI) that
    # started it, and asyncio kills its child processes when the loop closes.
    with open(output, "ab") as stdout:
        return subprocess.Popen(
            cmd, stdout=stdout, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )


def is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def running_pid(pid_file: Path) -> int | None:
    """The pid in `pid_file` if that process runs (a child that died unreaped does not)."""
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return None if is_zombie(pid) else pid
