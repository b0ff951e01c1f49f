"""`read_result`, the platform's read-back tool (processors/tool_executor/read_result.py): through
the real executor (signed authorization, pinned platform tool, registry host), against the real
local blob store opened by the factory in a tmp home, and a real MCP server process for the tool
whose result is offloaded. Also how the policy gate sees read-back text (taint). No broker."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from agentstream import ids
from agentstream.blobs import BlobHandle, BlobStore, BlobStoreUnavailable
from agentstream.blobs.factory import open_blob_store
from agentstream.blobs.local import LocalBlobStore
from agentstream.blobs.offload import offload
from agentstream.config import ModelSettings, Settings
from agentstream.events import ApprovalRequested, ToolCallAuthorized, ToolCallCompleted
from agentstream.kafka.state import PartitionStore
from agentstream.processors.tool_executor.app import builtin_entries
from agentstream.processors.tool_executor.builtin import BuiltinToolHost
from agentstream.processors.tool_executor.execute import ToolExecutor
from agentstream.processors.tool_executor.offload import ResultOffloader
from agentstream.processors.tool_executor.read_result import MAX_LENGTH, ReadResultTool
from agentstream.processors.tool_executor.registry_host import RegistryToolHost
from agentstream.registry.admin import validate_entry
from agentstream.registry.catalog import ToolCatalog
from agentstream.registry.entry import ToolEntry
from agentstream.registry.pins import resolve_pin
from agentstream.security.signing import Signer, sign_capability
from agentstream.settings import BlobSettings, forget_loaded, load
from agentstream.settings.table import rows
from tests.unit.test_policy_gate_core import SECRET, TAINTED, TENANT, Gate, decided, of_type, tainted_gate

OTHER, RUN, OTHER_RUN = "globex", "run_readback", "run_elsewhere"
FLOOD_SERVER = Path(__file__).parents[1] / "fixtures" / "big_result_mcp_server.py"
NOW_MS = 1_700_000_000_000
THRESHOLD = 16384
# Every position distinct, 1- to 4-byte UTF-8 characters: a slice off by one byte or one character shows.
TEXT = "".join(f"{i:05d}é中😀|" for i in range(12_000))  # 108,000 characters, ~230 KB


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    for variable, *_ in rows():
        monkeypatch.delenv(variable, raising=False)
    forget_loaded()
    yield Settings(bootstrap_servers="127.0.0.1:1", topic_prefix="t", home=tmp_path / "home", model=ModelSettings(),
                   kafka_extra={}, kafka_credentials_dir=None)  # fmt: skip
    forget_loaded()


@pytest.fixture
def store(settings: Settings) -> LocalBlobStore:
    opened = open_blob_store(settings, load(BlobSettings))
    assert isinstance(opened, LocalBlobStore)
    return opened


@dataclass
class Rig:
    executor: ToolExecutor
    signer: Signer

    def authorize(self, tool: str, arguments: dict[str, Any], *, run_id: str = RUN, n: int = 0) -> ToolCallAuthorized:
        call_id = ids.tool_call_id(run_id, 1, n)
        unsigned = ToolCallAuthorized(
            ids.authorized_id(call_id), run_id, TENANT, 1, call_id, f"c{n}", tool, "1",
            orjson.dumps(arguments).decode(), call_id, 30_000, "policy", NOW_MS + 300_000, "", "",
        )  # fmt: skip
        return replace(unsigned, capability=sign_capability(self.signer, unsigned))

    async def run(self, tool: str, arguments: dict[str, Any], *, run_id: str = RUN, n: int = 0) -> ToolCallCompleted:
        (completed,) = await self.executor.perform(self.authorize(tool, arguments, run_id=run_id, n=n))
        assert isinstance(completed, ToolCallCompleted)
        assert completed.content, "never an empty observation"
        return completed

    async def read(self, arguments: dict[str, Any], *, run_id: str = RUN, n: int = 0) -> ToolCallCompleted:
        return await self.run("read_result", arguments, run_id=run_id, n=n)


async def observed(store: BlobStore, completed: ToolCallCompleted) -> str:
    """What the model sees of a result: its content, or its blob's text when it was offloaded."""
    if not completed.result_blob:
        return completed.content
    return (await store.get(TENANT, BlobHandle.parse(completed.result_blob))).decode()


async def rig_with(
    tmp_path: Path, open_store: Callable[[], BlobStore], extra: Sequence[ToolEntry] = ()
) -> AsyncIterator[Rig]:
    builtin = BuiltinToolHost(tmp_path / "bank.sqlite")
    catalog = ToolCatalog()
    for entry in [*builtin_entries(builtin), *extra]:
        catalog.apply(entry.to_event())
    signer = Signer(b"k" * 32)
    host = RegistryToolHost(builtin, read_back=ReadResultTool(open_store))
    offloader = ResultOffloader(THRESHOLD, open_store)
    try:
        yield Rig(ToolExecutor(host, catalog, signer, None, lambda: NOW_MS, offloader=offloader), signer)
    finally:
        await host.aclose()


@pytest.fixture
async def rig(tmp_path: Path, store: LocalBlobStore) -> AsyncIterator[Rig]:
    async for r in rig_with(tmp_path, lambda: store):
        yield r


async def test_read_result_is_a_platform_tool_every_tenant_can_pin(tmp_path: Path) -> None:
    entries = {e.name: e for e in builtin_entries(BuiltinToolHost(tmp_path / "bank.sqlite"))}
    entry = entries["read_result"]
    assert (entry.owner, entry.tier, entry.idempotent, entry.transport) == ("", "read_only", True, {"kind": "builtin"})
    assert entry.input_schema["required"] == ["handle"] and not entry.input_schema["additionalProperties"]
    validate_entry(entry)  # what register_platform_tools's registration checks
    catalog = ToolCatalog()
    catalog.apply(entry.to_event())
    assert resolve_pin(catalog, TENANT, "read_result", "1") == resolve_pin(catalog, OTHER, "read_result", "1") == entry


async def test_an_offloaded_result_reads_back_through_the_executor(tmp_path: Path, store: LocalBlobStore) -> None:
    # The fixture server's `page` tool, registered by hand (discovering it would start one more process).
    transport = {
        "kind": "stdio",
        "server": "flood",
        "command": sys.executable,
        "args": [str(FLOOD_SERVER)],
        "sandbox": False,
    }
    schema = {"type": "object", "properties": {"kib": {"type": "integer"}, "tail": {"type": "string"}}}
    tools = [ToolEntry("page", "A page.", schema, "read_only", transport, idempotent=True)]
    async for rig in rig_with(tmp_path, lambda: store, tools):
        page = await rig.run("page", {"kib": 100, "tail": "the needle"})
        handle = BlobHandle.parse(page.result_blob)
        total = 100 * 1024 + len("\nthe needle")
        first = await rig.read({"handle": page.result_blob}, n=1)
        # 16 KiB and a header line: over the threshold, so offloaded like any large result.
        assert not first.is_error and first.result_blob
        assert await observed(store, first) == f"[read_result: chars 0-16384 of {total}]\n" + "." * 16384
        last = await rig.read({"handle": str(handle), "offset": total - 10, "length": 10}, n=2)
        assert last.content == f"[read_result: chars {total - 10}-{total} of {total}]\n" + "\nthe needle"[-10:]
        # Idempotent: the same call, the same observation.
        again = await rig.read({"handle": page.result_blob}, n=1)
        assert (again.content, again.result_blob) == (first.content, first.result_blob)
        # The longest read: its blob holds header and slice whole.
        big = await rig.read({"handle": page.result_blob, "offset": 50_000, "length": MAX_LENGTH}, n=3)
        assert big.result_blob and not big.is_error
        assert (
            await observed(store, big)
            == f"[read_result: chars 50000-{total} of {total}]\n" + ("." * 102_400 + "\nthe needle")[50_000:]
        )


async def test_slices_count_characters_and_successive_reads_rebuild_the_text(rig: Rig, store: LocalBlobStore) -> None:
    _, handle = await offload(store, TENANT, RUN, TEXT)
    pieces, offset, n = [], 0, 0
    while offset < len(TEXT):
        got = await rig.read({"handle": handle, "offset": offset, "length": 40_000}, n=n)
        head, _, body = (await observed(store, got)).partition("\n")
        end = min(len(TEXT), offset + 40_000)
        assert head == f"[read_result: chars {offset}-{end} of {len(TEXT)}]"
        pieces.append(body)
        offset, n = end, n + 1
    assert "".join(pieces) == TEXT and n == 3
    # A slice that starts and ends inside multi-byte characters' neighbours: exact characters.
    got = await rig.read({"handle": handle, "offset": 5, "length": 4}, n=9)
    assert got.content == f"[read_result: chars 5-9 of {len(TEXT)}]\né中😀|"


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        ({"offset": len(TEXT)}, f"offset {len(TEXT)} is past the end: the result has {len(TEXT)} characters"),
        ({"offset": 10**12}, "is past the end"),
        ({"offset": -1}, "offset must be >= 0"),
        ({"offset": True}, "offset must be an integer, not bool"),
        ({"offset": "0"}, "offset must be an integer, not str"),
        ({"length": 0}, f"length must be between 1 and {MAX_LENGTH}"),
        ({"length": MAX_LENGTH + 1}, f"length must be between 1 and {MAX_LENGTH}"),
        ({"length": 10**18}, f"length must be between 1 and {MAX_LENGTH}"),
        ({"length": 1.5}, "length must be an integer, not float"),
        ({"path": "/etc/passwd"}, "unexpected argument(s): path"),
    ],
)
async def test_bad_offsets_lengths_and_arguments_are_error_observations(
    rig: Rig, store: LocalBlobStore, arguments: dict[str, Any], reason: str
) -> None:
    _, handle = await offload(store, TENANT, RUN, TEXT)
    got = await rig.read({"handle": handle, **arguments})
    assert got.is_error and got.content.startswith("read_result: ") and reason in got.content, got.content


@pytest.mark.parametrize(
    ("handle", "reason"),
    [
        (None, "handle is required"),
        (42, "handle is required"),
        ("", "not a blob handle"),
        (f"blob:v1/{TENANT}/../{'a' * 64}/5", "not a blob handle"),
        (f"blob:v1/{TENANT}/{RUN}/{'A' * 64}/5", "not a blob handle"),  # upper-case hex
        ("blob:v1/" + "a" * 10_000_000, "a blob handle of"),  # length-capped before any pattern runs
    ],
)
async def test_malformed_handles_are_error_observations(rig: Rig, handle: object, reason: str) -> None:
    got = await rig.read({} if handle is None else {"handle": handle})
    assert got.is_error and reason in got.content and len(got.content) < 400, got.content[:500]


async def test_another_tenants_or_another_runs_handle_is_refused_before_any_read(
    rig: Rig, store: LocalBlobStore
) -> None:
    _, theirs = await offload(store, OTHER, RUN, "globex secret " * 2000)
    got = await rig.read({"handle": theirs})
    assert got.is_error and "belongs to another tenant" in got.content and "globex secret" not in got.content
    # The victim's digest under the reader's own tenant and run: nothing is there.
    forged = BlobHandle.parse(theirs)
    got = await rig.read({"handle": str(BlobHandle(TENANT, RUN, forged.sha256, forged.size))})
    assert got.is_error and "no blob" in got.content
    # A run reads back only its own results, not those of the tenant's other runs.
    _, elsewhere = await offload(store, TENANT, OTHER_RUN, "other run " * 2000)
    got = await rig.read({"handle": elsewhere})
    assert got.is_error and f"belongs to another run ({OTHER_RUN})" in got.content
    assert not (await rig.read({"handle": elsewhere}, run_id=OTHER_RUN)).is_error  # ...which reads its own


async def test_a_tampered_missing_or_oversized_blob_is_an_error_never_empty_text(
    rig: Rig, store: LocalBlobStore
) -> None:
    _, text = await offload(store, TENANT, RUN, TEXT)
    handle = BlobHandle.parse(text)
    path = store.path_of(handle.key)
    sealed = bytearray(path.read_bytes())
    sealed[-40] ^= 1
    path.write_bytes(sealed)
    got = await rig.read({"handle": text})
    assert got.is_error and "failed verification" in got.content and str(store.root) not in got.content
    path.unlink()
    got = await rig.read({"handle": text})
    assert got.is_error and f"no blob {handle}" in got.content and str(store.root) not in got.content
    huge = BlobHandle(TENANT, RUN, handle.sha256, store.max_bytes + 1)
    got = await rig.read({"handle": str(huge)})
    assert got.is_error and "more than the blob store holds" in got.content


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (
            BlobStoreUnavailable("S3 endpoint http://127.0.0.1:1 refused"),
            "the blob store is unavailable (BlobStoreUnavailable)",
        ),
        (PermissionError("/home/keys/master.json"), "read_result failed: PermissionError"),  # never a crash
    ],
)
async def test_an_unreachable_or_broken_store_is_an_error_observation(
    tmp_path: Path, failure: Exception, reason: str
) -> None:
    def opening() -> BlobStore:
        raise failure

    async for rig in rig_with(tmp_path, opening):
        got = await rig.read({"handle": str(BlobHandle(TENANT, RUN, "a" * 64, 20_000))})
        assert got.is_error and reason in got.content and "127.0.0.1" not in got.content and "/home" not in got.content


# --- how the policy gate sees read-back text -------------------------------------------------------


def completed(tool: str, content: str, blob: str = "", n: int = 9) -> ToolCallCompleted:
    call = ids.tool_call_id("r1", 2, n)
    return ToolCallCompleted(ids.completed_event_id(call), "r1", TENANT, 2, call, tool, call, content, False, 1.0, blob)


def test_read_back_text_is_tool_output_like_any_other_for_the_gate(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "gate")
    try:
        gate = tainted_gate(store)  # the run read a private record naming Dana Whitfield
        # A public tool's offloaded result (the journal holds its preview), read back in full: what
        # it shows is public, as if the tool had returned it inline.
        handle = str(BlobHandle(TENANT, "r1", "b" * 64, 50_000))
        gate.feed(completed("lookup", "Release index, page 1 ...", handle, n=7))
        gate.feed(completed("read_result", "[read_result: chars 0-100 of 50000]\nRelease owner Dana Whitfield", n=8))
        assert of_type(gate.call("fetch", {"url": "https://docs.example/?q=Dana+Whitfield"}), ToolCallAuthorized)
        state = store.get("taint/r1")
        assert state is not None and state["overflow"] is False
        assert decided(gate.call("fetch", {"url": f"https://docs.example/?q={SECRET}"}, index=1)).rule == "taint"
    finally:
        store.close()


def test_a_private_tools_result_that_arrives_offloaded_fails_closed(tmp_path: Path) -> None:
    """The executor never offloads a private tool's result; one that arrives offloaded (the policy
    changed between the call and its result) was read by the model in full but seen by the gate as
    a preview only. Without failing closed, reading it back (public, like any tool's output) would
    declassify even the preview the gate did fingerprint as private."""
    store = PartitionStore(tmp_path / "gate")
    try:
        gate = Gate(store, TAINTED)
        gate.start()
        handle = str(BlobHandle(TENANT, "r1", "c" * 64, 80_000))
        gate.feed(completed("account", f"Account: {SECRET}\n...", handle, n=7))
        gate.feed(completed("read_result", f"[read_result: chars 0-16384 of 80000]\nAccount: {SECRET}\n...", n=8))
        out = gate.call("fetch", {"url": f"https://docs.example/?q={SECRET}"})
        assert decided(out).rule == "taint" and of_type(out, ApprovalRequested)
        assert decided(gate.call("fetch", {"url": "https://docs.example/?q=weather"}, index=1)).rule == "taint"
    finally:
        store.close()
