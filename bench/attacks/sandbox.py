"""Attacks a registered stdio tool makes from inside its sandbox (issue 13, finding 1 and finding
9's sandbox bounds). Each returns True when the attack SUCCEEDED, judged from the host side, and
removes whatever it managed to leave on the host.

The tool is `HOSTILE_SERVER`, a small MCP stdio server whose tools write, open and read whatever
path they are given; `hostile_host` starts it as a tenant's tool is started (sandboxed), or with
`control=True` as a platform-wide registration that opts out of the sandbox (`McpServerConfig`
with `sandbox=None`, which `server_config` builds for a transport with `"sandbox": false` and no
owner): the same attacks then show what an unconfined tool does.

* the host's files: `plant_pth` (the venv's site-packages), `edit_package` (agentstream/sandbox),
  `write_etc`
* other sandboxes: `shared_tmp`, `shared_shm`, `sibling_home`
* the platform's descriptors: `inherited_descriptors` (/proc/self/fd, /proc/<ppid>/fd, /proc/1/fd)
* bounds: `oversized_file` (RLIMIT_FSIZE), `fill_scratch` (the scratch's size), `oversized_reply`
  (a stdout message past the transport's cap)
* identity: `runs_as_host_root` (the tool's uid as the host sees it)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import sysconfig
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

import agentstream.sandbox
from agentstream.processors.tool_executor.mcp_host import McpServerConfig, McpToolHost
from agentstream.sandbox import SandboxPolicy

HOSTILE_SERVER = r'''
import json, os, stat, sys
from mcp.server.mcpserver import MCPServer

server = MCPServer("hostile")


@server.tool()
def write(path: str, text: str) -> str:
    try:
        with open(os.path.expanduser(path), "w") as handle:
            handle.write(text)
        return "WROTE"
    except OSError as exc:
        return f"DENIED {type(exc).__name__}: {exc}"


@server.tool()
def open_for_append(path: str) -> str:
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
        return "OPENED"
    except OSError as exc:
        return f"DENIED {type(exc).__name__}: {exc}"


@server.tool()
def read(path: str) -> str:
    try:
        with open(os.path.expanduser(path)) as handle:
            return "READ " + handle.read()
    except OSError as exc:
        return f"DENIED {type(exc).__name__}: {exc}"


@server.tool()
def descriptors() -> str:
    """Everything readable through a descriptor it inherited or can reach in /proc."""
    seen = []
    for directory in ("/proc/self/fd", f"/proc/{os.getppid()}/fd", "/proc/1/fd"):
        try:
            names = os.listdir(directory)
        except OSError as exc:
            seen.append(f"{directory}: {type(exc).__name__}")
            continue
        for name in names:
            try:
                fd = os.open(f"{directory}/{name}", os.O_RDONLY | os.O_NONBLOCK)
            except OSError as exc:
                seen.append(f"{directory}/{name}: {type(exc).__name__}")
                continue
            try:
                if stat.S_ISREG(os.fstat(fd).st_mode) or stat.S_ISFIFO(os.fstat(fd).st_mode):
                    seen.append(os.read(fd, 4 << 20).decode(errors="replace"))
            except OSError as exc:
                seen.append(f"{directory}/{name}: {type(exc).__name__}")
            finally:
                os.close(fd)
    return "\n".join(seen)


@server.tool()
def write_big(path: str, mib: int) -> int:
    """Bytes written to one file before the write failed; the file is removed afterwards."""
    path, written, chunk = os.path.expanduser(path), 0, b"x" * (1 << 20)
    try:
        with open(path, "wb", buffering=0) as handle:
            for _ in range(mib):
                written += handle.write(chunk)
    except OSError:
        pass
    finally:
        if os.path.exists(path):
            os.unlink(path)
    return written


@server.tool()
def fill(directory: str, mib_each: int, files: int) -> int:
    """Bytes written over several files, each under any per-file cap; all removed afterwards."""
    directory, written, chunk, made = os.path.expanduser(directory), 0, b"x" * (1 << 20), []
    try:
        for index in range(files):
            made.append(os.path.join(directory, f"fill-{index}"))
            with open(made[-1], "wb", buffering=0) as handle:
                for _ in range(mib_each):
                    written += handle.write(chunk)
    except OSError:
        pass
    finally:
        for path in made:
            if os.path.exists(path):
                os.unlink(path)
    return written


@server.tool()
def shout(mib: int) -> str:
    return "y" * (mib << 20)


@server.tool()
def whoami() -> dict:
    return {"uid": os.getuid(), "gid": os.getgid(), "home": os.environ.get("HOME", ""),
            "uid_map": open("/proc/self/uid_map").read()}


if __name__ == "__main__":
    server.run()
'''


# What the default policy allows (read with defaults, so the attacks also run against a policy
# that has no such bound, as the code before issue 13 had).
FILE_CAP_MB: int = getattr(SandboxPolicy(), "max_file_mb", 32)
SCRATCH_CAP_MB: int = getattr(SandboxPolicy(), "scratch_mb", 64)


@dataclass(frozen=True, slots=True)
class HostileTool:
    host: McpToolHost
    script: Path

    @property
    def home(self) -> Path | None:
        """Its HOME as the host knows it (inside the sandbox, a private scratch takes its place)."""
        directory = self.host._sandbox_dir  # the host's own record of where the sandbox lives
        return Path(directory) / "home" if directory else None


def write_hostile_server(directory: Path) -> Path:
    """The server script, readable by the sandbox's unprivileged uid."""
    script = directory / "hostile_mcp_server.py"
    script.write_text(HOSTILE_SERVER)
    script.chmod(0o644)
    return script


def hostile_config(script: Path, *, control: bool = False, policy: SandboxPolicy | None = None) -> McpServerConfig:
    sandbox = None if control else (policy or SandboxPolicy())
    return McpServerConfig("hostile", sys.executable, [str(script)], risk="read_only", timeout_s=60.0, sandbox=sandbox)


async def hostile_host(directory: Path, *, control: bool = False, policy: SandboxPolicy | None = None) -> HostileTool:
    script = write_hostile_server(directory)
    host = McpToolHost(hostile_config(script, control=control, policy=policy))
    await host.start()
    return HostileTool(host, script)


async def call(tool: HostileTool, name: str, **arguments: Any) -> str:
    result = await tool.host.call(name, arguments, idempotency_key=uuid.uuid4().hex, timeout_s=60.0)
    if result.is_error:
        raise RuntimeError(f"{name}: {result.content}")
    return result.content


def marker() -> str:
    return f"agentstream-attack-{uuid.uuid4().hex[:12]}"


def _gone(*paths: Path) -> bool:
    """Whether none of `paths` exists on the host; removes those that do."""
    found = [path for path in paths if path.exists()]
    for path in found:
        with contextlib.suppress(OSError):
            path.unlink()
    return not found


def site_packages() -> Path:
    return Path(sysconfig.get_path("purelib"))


def package_dir() -> Path:
    return Path(agentstream.sandbox.__file__).parent


async def plant_pth(tool: HostileTool, name: str | None = None) -> bool:
    """A `.pth` file in the venv runs in every later Python process of the platform (inert here)."""
    target = site_packages() / f"{name or marker()}.pth"
    await call(tool, "write", path=str(target), text="# would be: import os; <attacker code>\n")
    return not _gone(target)


def _fingerprint(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


async def edit_package(tool: HostileTool, name: str | None = None) -> bool:
    """Plants a module in agentstream/sandbox and opens the bootstrap for writing (writes nothing,
    so even the control run changes no byte of it)."""
    bootstrap = package_dir() / "bootstrap.py"
    before = _fingerprint(bootstrap)
    planted = package_dir() / f"{(name or marker()).replace('-', '_')}.py"
    await call(tool, "write", path=str(planted), text="raise SystemExit('attacker code')\n")
    opened = await call(tool, "open_for_append", path=str(bootstrap))
    return not _gone(planted) or opened == "OPENED" or _fingerprint(bootstrap) != before


async def write_etc(tool: HostileTool, name: str | None = None) -> bool:
    target = Path("/etc") / (name or marker())
    await call(tool, "write", path=str(target), text="planted")
    return not _gone(target)


async def _shared(tool: HostileTool, sibling: HostileTool, directory: str, name: str | None) -> bool:
    target = Path(directory) / (name or marker())
    await call(tool, "write", path=str(target), text="planted by another tenant's tool")
    seen_by_sibling = (await call(sibling, "read", path=str(target))).startswith("READ planted")
    return not _gone(target) or seen_by_sibling


async def shared_tmp(tool: HostileTool, sibling: HostileTool, name: str | None = None) -> bool:
    """Something in /tmp that the host or another tenant's tool then sees."""
    return await _shared(tool, sibling, "/tmp", name)


async def shared_shm(tool: HostileTool, sibling: HostileTool, name: str | None = None) -> bool:
    return await _shared(tool, sibling, "/dev/shm", name)


async def sibling_home(tool: HostileTool, sibling: HostileTool, name: str | None = None) -> bool:
    """Writes into the directory of another tenant's sandbox (its HOME, by its host path)."""
    if sibling.home is None:
        return False  # an unsandboxed sibling has no sandbox directory to write into
    target = sibling.home / (name or marker())
    await call(tool, "write", path=str(target), text="planted by another tenant's tool")
    seen_by_sibling = (await call(sibling, "read", path=str(target))).startswith("READ planted")
    return not _gone(target) or seen_by_sibling


async def inherited_descriptors(tool: HostileTool, secret: str | None = None) -> bool:
    """Puts a secret in the executor's own stderr (its log) and in a private file the executor
    holds open (as it holds its keys and logs), then has the tool read every descriptor it can
    reach: its own, its parent's, pid 1's."""
    secret = secret or marker()
    os.write(2, f"executor log line: {secret}\n".encode())
    with tempfile.TemporaryDirectory() as private:  # mode 0700
        held = Path(private) / "platform-key"
        held.write_text(f"platform key: {secret}\n")
        with held.open() as _kept_open:
            return secret in await call(tool, "descriptors")


async def oversized_file(tool: HostileTool, cap_mb: int = FILE_CAP_MB) -> bool:
    """One file past the per-file cap (RLIMIT_FSIZE), in its own writable HOME."""
    return int(await call(tool, "write_big", path="~/big", mib=cap_mb + 8)) > cap_mb << 20


async def fill_scratch(tool: HostileTool, scratch_mb: int = SCRATCH_CAP_MB, file_mb: int = FILE_CAP_MB) -> bool:
    """More than the scratch's size in all (/tmp, /dev/shm and HOME share it), in files each under
    the per-file cap."""
    each = max(1, min(file_mb, scratch_mb) // 2)
    files = (scratch_mb + 16) // each + 1
    return int(await call(tool, "fill", directory="/tmp", mib_each=each, files=files)) > scratch_mb << 20


async def oversized_reply(tool: HostileTool, mib: int = 4) -> bool:
    """A reply the executor would have to buffer whole: True if it arrived as a result."""
    result = await tool.host.call("shout", {"mib": mib}, idempotency_key=uuid.uuid4().hex, timeout_s=60.0)
    return not result.is_error and len(result.content) >= mib << 20


def tool_processes(tool: HostileTool) -> list[int]:
    """Host pids of the tool's own process (not the sandbox's bootstrap or init)."""
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            # The sandbox's bootstrap and init carry the tool's argv too, after the bootstrap's name.
            if os.fsencode(tool.script) in argv and not any(b"agentstream.sandbox.bootstrap" in a for a in argv):
                found.append(int(entry))
    return found


async def host_identity(tool: HostileTool, name: str | None = None) -> dict[str, Any]:
    """The tool's uid as the host sees it: its processes' real uids, and the owner of a file it
    creates in its HOME, stat'ed from the host through the process's own root."""
    seen = orjson.loads(await call(tool, "whoami"))
    name = name or marker()
    await call(tool, "write", path=f"~/{name}", text="mine")
    pids = tool_processes(tool)
    uids = {int(Path(f"/proc/{pid}/status").read_text().split("\nUid:\t", 1)[1].split()[0]) for pid in pids}
    owners = set()
    for pid in pids:
        created = Path(f"/proc/{pid}/root{seen['home']}/{name}")
        with contextlib.suppress(OSError):
            owners.add(created.stat().st_uid)
            created.unlink()  # on the host's disk when the tool runs unconfined
    return {"inside": seen, "pids": pids, "process_uids": uids, "file_owners": owners}


async def runs_as_host_root(tool: HostileTool) -> bool:
    identity = await host_identity(tool)
    found = identity["process_uids"] | identity["file_owners"]
    # Not found at all counts as a success: the attack is judged unproven-safe, not safe.
    return not found or 0 in found
