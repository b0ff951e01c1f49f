"""The memory tools (processors/tool_executor/memory_tool.py) through the real executor (signed
authorization, pinned platform tool, registry host) against the real local blob store in a tmp
home. The index's records go to an in-process list here (the integration test writes them to the
broker); a "restart" rebuilds an index from them. Also how the policy gate sees memory (taint).
No broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from agentstream import ids
from agentstream.blobs.local import LocalBlobStore
from agentstream.config import Settings
from agentstream.events import (
    ApprovalRequested,
    MemoryFileSet,
    RunRequested,
    RunStarted,
    ToolCallAuthorized,
    ToolCallCompleted,
)
from agentstream.kafka.state import PartitionStore
from agentstream.memory.files import Caps, MemoryFiles
from agentstream.memory.index import MemoryIndex
from agentstream.processors.tool_executor.app import builtin_entries
from agentstream.processors.tool_executor.builtin import BuiltinToolHost
from agentstream.processors.tool_executor.execute import ToolExecutor
from agentstream.processors.tool_executor.memory_tool import MemoryTool
from agentstream.processors.tool_executor.offload import ResultOffloader
from agentstream.processors.tool_executor.registry_host import RegistryToolHost
from agentstream.registry.catalog import ToolCatalog
from agentstream.registry.entry import TenantPolicy
from agentstream.security.signing import Signer, sign_capability
from agentstream.settings import BlobSettings, load
from tests.unit import test_read_result
from tests.unit.test_policy_gate_core import ENTRIES, Gate, decided, of_type

# The fixtures of a tmp home (no broker) and its local blob store, shared with the read_result tests.
settings, store = test_read_result.settings, test_read_result.store

ACME, GLOBEX, RUN = "acme", "globex", "run_mem"
NOW_MS = 1_700_000_000_000
CAPS = Caps(max_file_bytes=64 * 1024, max_tenant_bytes=100 * 1024, max_files=5)


@dataclass
class Rig:
    executor: ToolExecutor
    signer: Signer
    files: MemoryFiles
    records: list[MemoryFileSet] = field(default_factory=list)
    n: int = 0

    async def call(self, tool: str, arguments: dict[str, Any], tenant: str = ACME) -> ToolCallCompleted:
        self.n += 1
        call_id = ids.tool_call_id(RUN, 1, self.n)
        unsigned = ToolCallAuthorized(
            ids.authorized_id(call_id), RUN, tenant, 1, call_id, f"c{self.n}", tool, "1",
            orjson.dumps(arguments).decode(), call_id, 30_000, "policy", NOW_MS + 300_000, "", "",
        )  # fmt: skip
        request = replace(unsigned, capability=sign_capability(self.signer, unsigned))
        (completed,) = await self.executor.perform(request)
        assert isinstance(completed, ToolCallCompleted) and completed.content
        return completed

    async def ok(self, arguments: dict[str, Any], tenant: str = ACME, tool: str = "memory") -> str:
        done = await self.call(tool, arguments, tenant)
        assert not done.is_error, done.content
        return done.content

    async def refused(self, arguments: dict[str, Any], tenant: str = ACME, tool: str = "memory") -> str:
        done = await self.call(tool, arguments, tenant)
        assert done.is_error, done.content
        return done.content


@pytest.fixture
async def rig(tmp_path: Path, settings: Settings, store: LocalBlobStore) -> AsyncIterator[Rig]:
    builtin = BuiltinToolHost(tmp_path / "bank.sqlite")
    catalog = ToolCatalog()
    for entry in builtin_entries(builtin):
        catalog.apply(entry.to_event())
    records: list[MemoryFileSet] = []

    async def publish(event: MemoryFileSet) -> None:
        records.append(event)

    files = MemoryFiles(MemoryIndex(settings), lambda: store, publish, CAPS, lambda: NOW_MS)
    host = RegistryToolHost(builtin, memory=MemoryTool(files))
    signer = Signer(b"k" * 32)
    # The offloader as deployed: memory results must stay inline all the same (they are private).
    offloader = ResultOffloader(16384, lambda: store)
    executor = ToolExecutor(host, catalog, signer, None, lambda: NOW_MS, offloader=offloader)
    try:
        yield Rig(executor, signer, files, records)
    finally:
        await host.aclose()


def rebuilt(settings: Settings, records: list[MemoryFileSet]) -> MemoryIndex:
    """An index as a restarted executor reads it from the topic."""
    index = MemoryIndex(settings)
    for record in records:
        index._on_event(record)
    return index


async def test_the_tools_are_platform_tools_with_their_tiers(tmp_path: Path) -> None:
    entries = {e.name: e for e in builtin_entries(BuiltinToolHost(tmp_path / "bank.sqlite"))}
    assert (entries["memory"].tier, entries["memory"].idempotent, entries["memory"].owner) == ("reversible", False, "")
    assert (entries["memory_view"].tier, entries["memory_view"].idempotent) == ("read_only", True)
    assert entries["memory_view"].input_schema["properties"]["command"]["enum"] == ["view"]


async def test_every_command_and_a_restart(rig: Rig, settings: Settings, store: LocalBlobStore) -> None:
    assert (await rig.ok({"command": "view", "path": "/memories"})).endswith("(empty)")
    assert "created" in await rig.ok({"command": "create", "path": "/memories/notes.md", "file_text": "a\nb\n"})
    await rig.ok({"command": "str_replace", "path": "/memories/notes.md", "old_str": "b", "new_str": "B"})
    await rig.ok({"command": "insert", "path": "/memories/notes.md", "insert_line": 1, "insert_text": "mid"})
    view = await rig.ok({"command": "view", "path": "/memories/notes.md"}, tool="memory_view")
    assert view.splitlines()[1:] == ["     1\ta", "     2\tmid", "     3\tB"]
    assert (await rig.ok({"command": "view", "path": "/memories/notes.md", "view_range": [3, -1]})).endswith("3\tB")
    await rig.ok({"command": "create", "path": "/memories/p/q.md", "file_text": "q"})
    await rig.ok({"command": "rename", "old_path": "/memories/p", "new_path": "/memories/projects"})
    listing = await rig.ok({"command": "view", "path": "/memories/"})
    assert "/memories/projects/q.md" in listing and "/memories/p/" not in listing
    assert [r.version for r in rig.records if r.path == "/memories/notes.md"] == [1, 2, 3]
    # A restart: the index read back from the records is the same, and so is what a view shows.
    index = rebuilt(settings, rig.records)
    assert index.files(ACME) == rig.files.index.files(ACME)
    assert set(index.files(ACME)) == {"/memories/notes.md", "/memories/projects/q.md"}
    # Every content is a sealed blob of the tenant's own, scope "memory"; old versions are gone.
    assert {f.blob for f in index.files(ACME).values()} == {
        f"blob:v1/{ACME}/memory/{e.sha256}/{f.size}"
        for e in await store.list_blobs(ACME, "memory")
        for f in index.files(ACME).values()
        if e.sha256 in f.blob
    }
    assert len(await store.list_blobs(ACME, "memory")) == 2
    assert "Deleted /memories/projects (1 files)" in await rig.ok({"command": "delete", "path": "/memories/projects"})
    await rig.ok({"command": "delete", "path": "/memories/notes.md"})
    assert rebuilt(settings, rig.records).files(ACME) == {} and await store.list_blobs(ACME) == []
    assert rig.records[-1].deleted and rig.records[-1].version == 4


async def test_same_content_in_two_files_shares_a_blob_until_both_go(rig: Rig, store: LocalBlobStore) -> None:
    for path in ("/memories/a", "/memories/b"):
        await rig.ok({"command": "create", "path": path, "file_text": "same"})
    await rig.ok({"command": "delete", "path": "/memories/a"})
    assert (await rig.ok({"command": "view", "path": "/memories/b"})).endswith("1\tsame")
    await rig.ok({"command": "create", "path": "/memories/b", "file_text": "other"})  # overwrite drops "same"
    assert len(await store.list_blobs(ACME, "memory")) == 1


async def test_no_tenant_sees_another_tenants_memory(rig: Rig, store: LocalBlobStore) -> None:
    await rig.ok({"command": "create", "path": "/memories/secret.md", "file_text": "acme's plan"})
    assert (await rig.ok({"command": "view", "path": "/memories"}, tenant=GLOBEX)).endswith("(empty)")
    assert "does not exist" in await rig.refused({"command": "view", "path": "/memories/secret.md"}, tenant=GLOBEX)
    assert "does not exist" in await rig.refused({"command": "delete", "path": "/memories/secret.md"}, tenant=GLOBEX)
    # The tenant is the authorization's; an argument naming one is refused, not obeyed.
    for bad in ({"command": "view", "path": "/memories", "tenant": ACME},
                {"command": "view", "path": "/memories/../acme/memories/secret.md"},
                {"command": "view", "path": "/acme/memories/secret.md"}):  # fmt: skip
        await rig.refused(bad, tenant=GLOBEX)
    await rig.ok({"command": "create", "path": "/memories/secret.md", "file_text": "globex's own"}, tenant=GLOBEX)
    assert (await rig.ok({"command": "view", "path": "/memories/secret.md"})).endswith("acme's plan")
    assert [e.tenant_id for e in await store.list_blobs(GLOBEX)] == [GLOBEX]


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        ({"command": "create", "path": "/memories/../x", "file_text": "x"}, "'..'"),
        ({"command": "create", "path": "/etc/passwd", "file_text": "x"}, "outside /memories"),
        ({"command": "view", "path": "/"}, "outside /memories"),
        ({"command": "create", "path": "/memories/big", "file_text": "x" * (64 * 1024 + 1)}, "cap of 65536 bytes per"),
        ({"command": "str_replace", "path": "/memories/none", "old_str": "a", "new_str": "b"}, "create it first"),
        ({"command": "rename", "old_path": "/memories/none", "new_path": "/memories/b"}, "does not exist"),
        ({"command": "view", "path": "/memories/none"}, "does not exist"),
        ({"command": "create", "path": "/memories/x", "file_text": "x"}, "only reads"),
    ],
)
async def test_bad_input_is_an_error_observation_and_writes_nothing(
    rig: Rig, arguments: dict[str, Any], reason: str
) -> None:
    tool = "memory_view" if reason == "only reads" else "memory"
    assert reason in await rig.refused(arguments, tool=tool)
    assert rig.records == []


async def test_text_that_is_not_utf8_is_refused(rig: Rig) -> None:
    # Unreachable through JSON arguments (the executor refuses those first), refused here all the same.
    tool = rig.executor.host.memory
    assert tool is not None
    arguments = {"command": "create", "path": "/memories/s", "file_text": "half \ud83d"}
    result = await tool.call("memory", arguments, tenant=ACME, run_id=RUN, timeout_s=5)
    assert result.is_error and "unpaired surrogate" in result.content and rig.records == []


async def test_caps_per_tenant_and_placement(rig: Rig) -> None:
    chunk = "y" * (40 * 1024)
    await rig.ok({"command": "create", "path": "/memories/one", "file_text": chunk})
    await rig.ok({"command": "create", "path": "/memories/two", "file_text": chunk})
    before = len(rig.records)
    over = await rig.refused({"command": "create", "path": "/memories/three", "file_text": chunk})
    assert "over its cap of 102400 bytes" in over and "nothing was written" in over
    await rig.refused({"command": "insert", "path": "/memories/one", "insert_line": 0, "insert_text": chunk})
    assert len(rig.records) == before
    await rig.ok({"command": "create", "path": "/memories/two", "file_text": "short"})  # shrinking is fine
    for n in range(3):
        await rig.ok({"command": "create", "path": f"/memories/n{n}", "file_text": "n"})
    assert "over its cap of 5" in await rig.refused({"command": "create", "path": "/memories/n9", "file_text": "n"})
    # Another tenant's caps are its own.
    await rig.ok({"command": "create", "path": "/memories/n9", "file_text": "n"}, tenant=GLOBEX)
    assert "is a file" in await rig.refused({"command": "create", "path": "/memories/one/x", "file_text": "x"})
    await rig.ok({"command": "delete", "path": "/memories/n0"})
    await rig.ok({"command": "create", "path": "/memories/d/x", "file_text": "x"})
    assert "is a directory" in await rig.refused({"command": "create", "path": "/memories/d", "file_text": "x"})
    assert "already exists" in await rig.refused(
        {"command": "rename", "old_path": "/memories/one", "new_path": "/memories/d"}
    )


async def test_a_damaged_blob_is_an_error_never_empty_text(rig: Rig, store: LocalBlobStore, settings: Settings) -> None:
    await rig.ok({"command": "create", "path": "/memories/a", "file_text": "keep me"})
    blob = rig.files.index.files(ACME)["/memories/a"].blob
    path = load(BlobSettings).resolved_dir(settings.home) / ACME / "memory" / blob.split("/")[3]
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    assert "failed verification" in await rig.refused({"command": "view", "path": "/memories/a"})
    path.unlink()
    assert "missing" in await rig.refused(
        {"command": "str_replace", "path": "/memories/a", "old_str": "k", "new_str": ""}
    )


async def test_large_views_stay_inline_for_the_gate(rig: Rig) -> None:
    text = "".join(f"fact {i}\n" for i in range(3000))  # ~50 KB viewed: over the 16 KiB offload threshold
    await rig.ok({"command": "create", "path": "/memories/big", "file_text": text + text})
    done = await rig.call("memory", {"command": "view", "path": "/memories/big", "view_range": [1, 3000]})
    assert done.result_blob == "" and done.content.endswith("3000\tfact 2999")  # private: never offloaded
    cut = await rig.ok({"command": "view", "path": "/memories/big"})  # a view is cut, saying where to go on
    first = int(cut.rsplit("view_range=[", 1)[1].split(",")[0])
    rest = await rig.ok({"command": "view", "path": "/memories/big", "view_range": [first, -1]})
    assert rest.splitlines()[1].lstrip().startswith(f"{first}\t") and rest.endswith("6000\tfact 2999")


def test_memory_content_is_private_for_taint(tmp_path: Path) -> None:
    """Whatever the tenant's private_tools say (none here), what a run read from its memory is
    private: an egress-capable call carrying it needs a person."""
    store = PartitionStore(tmp_path / "gate")
    try:
        gate = Gate(store, TenantPolicy(egress_tools=("share",)))
        for entry in builtin_entries(BuiltinToolHost(tmp_path / "bank.sqlite")):
            if entry.name.startswith("memory"):
                gate.catalog.apply(entry.to_event())
        versions = {**{e.name: e.version for e in ENTRIES}, "memory": "1", "memory_view": "1"}
        gate.feed(RunRequested(ids.run_requested_id("r1"), "r1", "acme", "recall", "m", list(versions), 10, "r1"),
                  RunStarted(ids.run_started_id("r1"), "r1", "acme", "m", "[]", 10, "", versions))  # fmt: skip
        gate.result("memory_view", "     1\tclient Dana Whitfield, account ACCT-4417-2093-8861")
        out = gate.call("share", {"doc": "ACCT-4417-2093-8861"})
        assert (decided(out).decision, decided(out).rule) == ("needs_approval", "taint")
        assert "memory_view" in of_type(out, ApprovalRequested)[0].reason
        assert of_type(gate.call("share", {"doc": "hello there"}, index=1), ToolCallAuthorized)
        allowed = gate.call("lookup", {"q": "ACCT-4417-2093-8861"}, index=2)  # not egress-capable
        assert of_type(allowed, ToolCallAuthorized)
    finally:
        store.close()


def test_runs_without_memory_tools_track_nothing(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "gate")
    try:
        gate = Gate(store, TenantPolicy(egress_tools=("share",)))
        gate.start()
        gate.result("lookup", "ACCT-4417-2093-8861")
        assert store.get("taint/r1") is None
        assert of_type(gate.call("share", {"doc": "ACCT-4417-2093-8861"}), ToolCallAuthorized)
    finally:
        store.close()
