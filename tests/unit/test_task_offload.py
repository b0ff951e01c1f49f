"""A task over the offload threshold: the RunRequested holds a preview and a handle, every step's
journaled request carries the handle on the task message (not the task again), and the model
invoker gives the provider the whole text. The real local blob store; the orchestrator's core."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentstream import ids
from agentstream.blobs import BlobHandle
from agentstream.blobs.local import LocalBlobStore
from agentstream.blobs.task import offload_task
from agentstream.codec import AvroCodec
from agentstream.credentials.keys import LocalKeyProvider
from agentstream.events import LlmCallRequested, RunRequested, RunStarted
from agentstream.llm import messages_from_json
from agentstream.processors.model_invoker.blobs import BlobResolver
from agentstream.processors.orchestrator.decide import OrchestratorConfig, decide
from agentstream.processors.orchestrator.evolve import evolve

RUN, TENANT, THRESHOLD = "run_task", "acme", 16 * 1024


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs", LocalKeyProvider(tmp_path / "keys" / "master.json"), 1024 * 1024)


async def test_a_small_task_stays_inline_and_a_large_one_is_offloaded(store: LocalBlobStore) -> None:
    assert await offload_task(lambda: store, TENANT, RUN, "pay ACME", THRESHOLD) == ("pay ACME", "")
    assert await offload_task(lambda: store, TENANT, RUN, "é" * (THRESHOLD // 2), THRESHOLD) == (
        "é" * (THRESHOLD // 2),
        "",
    )
    task = "background " * 3000 + "\nQUESTION: the last line"
    preview, handle = await offload_task(lambda: store, TENANT, RUN, task, THRESHOLD)
    parsed = BlobHandle.parse(handle)
    assert (parsed.tenant_id, parsed.scope, parsed.size) == (TENANT, RUN, len(task))
    assert preview.startswith("background ") and "QUESTION" not in preview and handle in preview
    tiny = LocalBlobStore(store.root, LocalKeyProvider(store.root.parent / "keys" / "master.json"), 100)
    assert await offload_task(lambda: tiny, TENANT, RUN, task, THRESHOLD) == (task, "")  # refused: inline


async def test_every_request_carries_the_handle_and_the_provider_gets_the_whole_task(store: LocalBlobStore) -> None:
    task = "context " * 4000 + "\nthe instruction at the end"
    preview, handle = await offload_task(lambda: store, TENANT, RUN, task, THRESHOLD)
    requested = RunRequested(ids.run_requested_id(RUN), RUN, TENANT, preview, "m", [], 5, "k", task_blob=handle)
    assert len(AvroCodec().encode(requested)) < 4096
    state = evolve(requested, None)
    assert state is not None
    (started,) = decide(state, {}, OrchestratorConfig())
    assert isinstance(started, RunStarted)
    state = evolve(started, state)
    assert state is not None
    (llm,) = decide(state, {}, OrchestratorConfig())
    assert isinstance(llm, LlmCallRequested) and len(llm.messages_json) < 4096
    journaled = messages_from_json(llm.messages_json)[1]
    assert (journaled.role, journaled.content, journaled.blob) == ("user", preview, handle)
    resolved = await BlobResolver(lambda: store).resolve(llm)
    assert isinstance(resolved, LlmCallRequested)
    assert messages_from_json(resolved.messages_json)[1].content == task
