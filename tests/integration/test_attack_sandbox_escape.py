"""Issue 13, finding 1 (the sandbox left the host writable) and finding 9's sandbox bounds: a
registered stdio tool, run in the sandbox exactly as a tenant's is, tries to write the venv, the
platform's package, /etc, a /tmp or /dev/shm another tenant's tool sees, a sibling sandbox's
directory; to read the executor's log through an inherited descriptor; to write past its caps;
and to hand the executor a reply too large to buffer. Each attempt is refused, nothing changed on
the host, and the tool is not host root. The attempts are bench/attacks/sandbox.py's."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentstream.processors.tool_executor.registry_host import server_config
from agentstream.registry.entry import ToolEntry
from agentstream.sandbox import SandboxPolicy, namespaces_available, sandboxed_argv
from agentstream.sandbox.launcher import sandbox_root
from bench.attacks import sandbox as attacks
from bench.attacks.sandbox import HostileTool

pytestmark = pytest.mark.skipif(not namespaces_available(), reason="needs user, mount, net and pid namespaces")


def package_fingerprint() -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(attacks.package_dir().glob("*.py"))}


@pytest.fixture(scope="module")
async def tools(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[HostileTool, HostileTool]]:
    """Two sandboxed tools, as two tenants' would be: separate processes, separate sandboxes."""
    first = await attacks.hostile_host(tmp_path_factory.mktemp("tenant-a"))
    second = await attacks.hostile_host(tmp_path_factory.mktemp("tenant-b"))
    try:
        yield first, second
    finally:
        await first.host.aclose()
        await second.host.aclose()


async def test_the_venv_and_the_platform_package_stay_unwritten(tools: tuple[HostileTool, HostileTool]) -> None:
    tool, _ = tools
    before = package_fingerprint()
    name = attacks.marker()
    assert not await attacks.plant_pth(tool, name)
    assert not await attacks.edit_package(tool, name)
    assert not (attacks.site_packages() / f"{name}.pth").exists()
    assert package_fingerprint() == before  # no module added, none changed
    # Refused by the filesystem itself, not merely by a missing directory.
    answer = await attacks.call(tool, "write", path=str(attacks.site_packages() / f"{name}.pth"), text="x")
    assert answer.startswith("DENIED OSError") and "Read-only file system" in answer, answer
    # An existing file: its mode refuses the tool's uid first (the mount would refuse it next).
    answer = await attacks.call(tool, "open_for_append", path=str(attacks.package_dir() / "bootstrap.py"))
    if attacks.package_dir().is_relative_to("/tmp"):
        # A checkout under /tmp (a CI clone) is not even visible: the tool's /tmp is its own tmpfs.
        assert answer.startswith("DENIED FileNotFoundError"), answer
    else:
        assert answer.startswith(("DENIED OSError", "DENIED PermissionError")), answer


async def test_etc_tmp_and_shm_are_not_shared_with_the_host_or_another_tenant(
    tools: tuple[HostileTool, HostileTool],
) -> None:
    tool, sibling = tools
    name = attacks.marker()
    assert not await attacks.write_etc(tool, name)
    assert not await attacks.shared_tmp(tool, sibling, name)
    assert not await attacks.shared_shm(tool, sibling, name)
    for directory in ("/etc", "/tmp", "/dev/shm"):
        assert not (Path(directory) / name).exists()
    # /tmp and /dev/shm are writable, but each sandbox's own: the tool reads back what it wrote,
    # the other tenant's tool and the host never see it.
    assert await attacks.call(tool, "read", path=f"/tmp/{name}") == "READ planted by another tenant's tool"
    assert (await attacks.call(sibling, "read", path=f"/tmp/{name}")).startswith("DENIED FileNotFoundError")


async def test_a_sibling_sandbox_directory_is_out_of_reach(tools: tuple[HostileTool, HostileTool]) -> None:
    tool, sibling = tools
    assert sibling.home is not None
    name = attacks.marker()
    assert not await attacks.sibling_home(tool, sibling, name)
    assert not (sibling.home / name).exists()
    assert list(sibling.home.iterdir()) == []  # the host-side HOME stays empty: HOME is a scratch


async def test_no_descriptor_reaches_the_executors_log(tools: tuple[HostileTool, HostileTool]) -> None:
    tool, _ = tools
    assert not await attacks.inherited_descriptors(tool)
    # The tool's stdio are pipes of its own; pid 1 (its namespace's init, root) is out of its reach.
    seen = await attacks.call(tool, "descriptors")
    assert "/proc/1/fd: PermissionError" in seen, seen


async def test_the_scratch_and_file_size_are_capped(tools: tuple[HostileTool, HostileTool]) -> None:
    tool, _ = tools
    assert not await attacks.oversized_file(tool, attacks.FILE_CAP_MB)
    assert not await attacks.fill_scratch(tool, attacks.SCRATCH_CAP_MB, attacks.FILE_CAP_MB)
    # Within the caps, writing works (so the refusals above are the caps, not a read-only HOME).
    written = int(await attacks.call(tool, "write_big", path="~/fits", mib=attacks.FILE_CAP_MB - 1))
    assert written == (attacks.FILE_CAP_MB - 1) << 20


async def test_a_reply_past_the_message_cap_is_refused_and_the_server_lives_on(
    tools: tuple[HostileTool, HostileTool],
) -> None:
    tool, _ = tools
    assert not await attacks.oversized_reply(tool, mib=4)
    result = await tool.host.call("shout", {"mib": 4}, idempotency_key="k", timeout_s=60)
    assert result.is_error and "exceeded the 1048576-byte message limit" in result.content, result.content[:300]
    assert (await attacks.call(tool, "shout", mib=0)) == ""  # same connection, still in step
    assert tool.host.restarts == 0


async def test_the_tool_is_not_host_root(tools: tuple[HostileTool, HostileTool]) -> None:
    tool, _ = tools
    assert not await attacks.runs_as_host_root(tool)
    identity = await attacks.host_identity(tool)
    assert identity["pids"], "the tool's process was not found on the host"
    assert 0 not in identity["process_uids"] and 0 not in identity["file_owners"], identity
    assert identity["file_owners"], identity  # the file it made was found, and stat'ed, from the host
    if os.geteuid() == 0:
        tool_uid = SandboxPolicy().tool_uid
        assert identity["process_uids"] == identity["file_owners"] == {tool_uid}, identity
        # Its namespace maps its uid to the same unprivileged host uid, and root only to the bootstrap.
        rows = [line.split() for line in identity["inside"]["uid_map"].splitlines()]
        assert [str(tool_uid), str(tool_uid), "1"] in rows, rows
        assert identity["inside"]["uid"] == tool_uid


async def test_only_an_operator_grants_a_writable_directory(tmp_path: Path) -> None:
    transport = {"kind": "stdio", "command": "python3", "args": [], "writable": ["/etc", str(tmp_path)]}
    tenant_tool = ToolEntry("t", "", {"type": "object"}, "read_only", transport, owner="tenant-a")
    sandbox = server_config(tenant_tool).sandbox
    assert sandbox is not None and sandbox.writable_paths == ()  # a tenant's registration never gets one
    operator_tool = ToolEntry("t", "", {"type": "object"}, "read_only", dict(transport, writable=[str(tmp_path)]))
    sandbox = server_config(operator_tool).sandbox
    assert sandbox is not None and sandbox.writable_paths == (str(tmp_path),)
    # Never over (or around) the platform's own paths, whoever asks.
    with pytest.raises(ValueError, match="overlaps the platform's own paths"):
        sandboxed_argv(sys.executable, [], SandboxPolicy(writable_paths=(sandbox_root(),)), None)
    # Granted, the directory is writable to the tool, and only it: the rest stays read-only.
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)
    granted = await attacks.hostile_host(tmp_path, policy=SandboxPolicy(writable_paths=(str(data),)))
    try:
        assert await attacks.call(granted, "write", path=str(data / "out"), text="kept") == "WROTE"
        assert not await attacks.write_etc(granted)
        assert not await attacks.plant_pth(granted)
    finally:
        await granted.host.aclose()
    assert (data / "out").read_text() == "kept" and (data / "out").stat().st_uid != 0
