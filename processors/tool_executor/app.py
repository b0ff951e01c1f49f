"""The tool executor process: registers the built-in and reference tools in the registry, then
performs the calls the policy gate authorized (ToolCallAuthorized), and nothing else."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable

from agentstream.blobs import BlobStore
from agentstream.blobs.factory import open_blob_store
from agentstream.calls import CallLedgerCore, concerns_tool_calls, cost_clearance
from agentstream.config import Settings
from agentstream.credentials.delegation import CredentialBroker
from agentstream.credentials.keys import local_key_provider
from agentstream.credentials.store import SecretDirectory
from agentstream.credentials.used import RocksUsedTokens
from agentstream.events import Event, MemoryFileSet, ToolCallAuthorized, ToolCallCompleted
from agentstream.kafka.journal import RecordFactory
from agentstream.kafka.producer import AsyncProducer, producer_config
from agentstream.kafka.table import put_record
from agentstream.memory.files import Caps, MemoryFiles
from agentstream.memory.index import MemoryIndex, memory_topic
from agentstream.observability.genai import traced_tool
from agentstream.process import Built
from agentstream.processors.tool_executor.approval_tool import descriptor as approval_descriptor
from agentstream.processors.tool_executor.builtin import BuiltinToolHost
from agentstream.processors.tool_executor.code_tool import CodeTool
from agentstream.processors.tool_executor.code_tool import descriptor as run_code_descriptor
from agentstream.processors.tool_executor.discovery import discover
from agentstream.processors.tool_executor.execute import ToolExecutor
from agentstream.processors.tool_executor.mcp_config import time_server_config
from agentstream.processors.tool_executor.memory_tool import MemoryTool
from agentstream.processors.tool_executor.memory_tool import descriptors as memory_descriptors
from agentstream.processors.tool_executor.offload import ResultOffloader
from agentstream.processors.tool_executor.read_result import ReadResultTool
from agentstream.processors.tool_executor.read_result import descriptor as read_result_descriptor
from agentstream.processors.tool_executor.registry_host import RegistryToolHost
from agentstream.registry.admin import register_tool
from agentstream.registry.catalog import ToolCatalog
from agentstream.registry.entry import ToolEntry
from agentstream.registry.pins import resolve_pin
from agentstream.registry.reader import CatalogReader
from agentstream.security.signing import platform_signers
from agentstream.settings import BlobSettings, MemorySettings, load
from agentstream.subagents import descriptor as spawn_agent_descriptor
from agentstream.tooling import ToolDescriptor

_time = time_server_config()
TIME_SERVER = {"kind": "stdio", "server": _time.name, "command": _time.command, "args": _time.args}


def _result_of(event: Event) -> str | None:
    return event.call_id if isinstance(event, ToolCallCompleted) else None


def builtin_entry(descriptor: ToolDescriptor) -> ToolEntry:
    spec = descriptor.spec
    return ToolEntry(
        name=spec.name,
        description=spec.description,
        input_schema=spec.input_schema,
        tier=descriptor.risk,
        transport={"kind": "builtin"},
        scopes=descriptor.scopes,
        secrets=descriptor.secrets,
        timeout_ms=int(descriptor.timeout_s * 1000),
        idempotent=descriptor.idempotent,
    )


async def time_tool_entries() -> list[ToolEntry]:
    """The reference mcp-server-time's tools (read-only), drafted from its own `tools/list`, asked
    of it inside the sandbox it will run in."""
    drafts = await discover(TIME_SERVER, sandboxed=True)
    return [dataclasses.replace(d, tier="read_only", idempotent=True, timeout_ms=10_000) for d in drafts]


def builtin_entries(host: BuiltinToolHost) -> list[ToolEntry]:
    """The in-process tools: the demo built-ins, `read_result`, the memory tools and `run_code`,
    which every run may pin."""
    platform = [read_result_descriptor(), *memory_descriptors(), run_code_descriptor(), approval_descriptor()]
    platform.append(spawn_agent_descriptor())  # declared here, run by the orchestrator (agentstream/subagents.py)
    return [builtin_entry(d) for d in [*host.descriptors(), *platform]]


async def register_platform_tools(settings: Settings, catalog: ToolCatalog, host: BuiltinToolHost) -> None:
    for draft in builtin_entries(host) + await time_tool_entries():
        await register_tool(settings, dataclasses.replace(draft, owner=""), catalog)


async def build(settings: Settings, records: RecordFactory, producer: AsyncProducer) -> Built:
    settings.home.mkdir(parents=True, exist_ok=True)
    reader = CatalogReader(settings)
    await reader.start()
    builtin = BuiltinToolHost(settings.bank_path)
    await register_platform_tools(settings, reader.catalog, builtin)
    signers = platform_signers(settings, "tool-executor")
    secrets = SecretDirectory(settings)
    await secrets.start()
    # One store per instance on a host (RocksDB locks its directory); the instance is the process's.
    used = RocksUsedTokens(settings.state_dir / f"used-delegations-{settings.instance}")
    broker = CredentialBroker(secrets, local_key_provider(settings), signers.delegation, used)
    blobs = load(BlobSettings)
    # One store for the offloader and read_result, opened on first use by either.
    open_store = functools.cache(lambda: open_blob_store(settings, blobs))
    # The platform's home (keys, state, every tenant's data) is hidden from every sandboxed tool.
    memory_index = MemoryIndex(settings)
    await memory_index.start()
    memory_producer = AsyncProducer(producer_config(settings.bootstrap_servers, settings.kafka_extra))
    memory = MemoryTool(open_memory(settings, memory_index, open_store, memory_producer))
    read_back = ReadResultTool(open_store)
    code = CodeTool(hidden_paths=(settings.home,))
    host = RegistryToolHost(builtin, hidden_paths=(settings.home,), read_back=read_back, memory=memory, code=code)
    offloader = None
    if blobs.offload_bytes:  # 0: every result stays in the journal (cut at its cap)
        offloader = ResultOffloader(blobs.offload_bytes, open_store)
    executor = ToolExecutor(
        host, reader.catalog, signers.capability, broker, lambda: int(time.time() * 1000), offloader=offloader
    )

    def needs_barrier(request: ToolCallAuthorized) -> bool:
        # No side effect starts after its run's cancel is journaled. The read barrier costs a
        # broker round trip, so read-only tools, which change nothing, skip it.
        entry = resolve_pin(reader.catalog, request.tenant_id, request.tool, request.tool_version)
        return entry is None or entry.tier != "read_only"

    core = CallLedgerCore(
        "tool-executor",
        ToolCallAuthorized,
        _result_of,
        lambda request, _clearances: traced_tool(request, lambda: executor.perform(request)),
        frozenset({"ToolCallCompleted"}),
        barrier=needs_barrier,
        admit=executor.admits,
        requires=cost_clearance(settings.cost.governor),
        # A non-idempotent tool's call that a crash interrupted is reported, never run again.
        at_most_once=executor.at_most_once,
        interrupted=executor.interrupted,
        concerns=concerns_tool_calls,
    )

    async def close() -> None:
        reader.close()
        secrets.close()
        memory_index.close()
        used.close()
        await host.aclose()
        await memory_producer.aclose()

    return Built(core=core, before_batch=[reader.poll, secrets.poll, memory_index.poll], cleanup=[close])


def open_memory(
    settings: Settings, index: MemoryIndex, open_store: Callable[[], BlobStore], producer: AsyncProducer
) -> MemoryFiles:
    """The memory files of every tenant, over this executor's index, store and producer."""
    caps = load(MemorySettings)
    topic = memory_topic(settings)

    async def publish(event: MemoryFileSet) -> None:
        await put_record(settings, topic, event, producer)

    return MemoryFiles(
        index, open_store, publish, Caps(caps.max_file_bytes, caps.max_tenant_bytes, caps.max_files),
        lambda: int(time.time() * 1000),
    )  # fmt: skip
