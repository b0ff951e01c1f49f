"""Builds the command line that runs a tool inside a sandbox, and the environment it starts with."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping

from agentstream.sandbox.policy import SandboxPolicy

log = logging.getLogger(__name__)

BOOTSTRAP_MODULE = "agentstream.sandbox.bootstrap"
# New user namespace (so no privilege is needed) mapped to root (so `ip link set lo up` is allowed
# in it) and a new network namespace (so the only way out is the egress proxy's socket file).
UNSHARE_FLAGS = ("--user", "--map-root-user", "--net")
_FALLBACK_PATH = "/usr/local/bin:/usr/bin:/bin"


class SandboxUnavailable(RuntimeError):
    """The policy asks for isolation this machine cannot provide; the tool must not run without it."""


@functools.cache
def _unshare_path() -> str | None:
    return shutil.which("unshare")


@functools.cache
def namespaces_available() -> bool:
    """Whether unprivileged user+network namespaces work here; probed once per process."""
    unshare = _unshare_path()
    if unshare is None or not sys.platform.startswith("linux"):
        return False
    try:
        probe = subprocess.run(
            [unshare, *UNSHARE_FLAGS, "true"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("sandbox namespaces unavailable: %s", exc)
        return False
    if probe.returncode != 0:
        log.warning("sandbox namespaces unavailable: %s", probe.stderr.decode(errors="replace").strip())
    return probe.returncode == 0


def require_sandbox(policy: SandboxPolicy) -> None:
    if policy.network_namespace and not namespaces_available():
        raise SandboxUnavailable(
            "user and network namespaces are not available (`unshare --user --map-root-user --net` failed); "
            "refusing to run the tool unsandboxed. Set network_namespace=False to accept that explicitly."
        )


def sandboxed_argv(command: str, args: list[str], policy: SandboxPolicy, proxy_socket: str | None) -> list[str]:
    """The argv that runs `command args...` under `policy`. Without `proxy_socket` the tool gets
    no egress at all (in a network namespace) and no proxy variables."""
    require_sandbox(policy)
    bootstrap = [
        sys.executable,
        # Isolated mode: the tool's own PYTHONPATH and the like (its env) must not steer our bootstrap.
        "-I",
        "-m",
        BOOTSTRAP_MODULE,
        *(("--proxy-socket", proxy_socket) if proxy_socket else ()),
        *(() if policy.network_namespace else ("--no-netns",)),
        "--cpu-seconds", str(policy.cpu_seconds),
        "--memory-mb", str(policy.memory_mb),
        "--nproc", str(policy.max_processes),
        "--nofile", str(policy.max_open_files),
        "--",
        command,
        *args,
    ]  # fmt: skip
    if not policy.network_namespace:
        return bootstrap
    unshare = _unshare_path()
    assert unshare is not None  # namespaces_available() found it
    return [unshare, *UNSHARE_FLAGS, "--", *bootstrap]


def scrubbed_environment(extra: Mapping[str, str], *, home: str) -> dict[str, str]:
    """All a sandboxed tool inherits: PATH, a private HOME, a UTF-8 locale, and its own `extra`."""
    env = {"PATH": os.environ.get("PATH") or _FALLBACK_PATH, "HOME": home, "LANG": "C.UTF-8"}
    return env | dict(extra)
