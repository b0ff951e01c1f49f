"""The replica emulator's HTTP face: an OpenAI-compatible server whose latencies and cache hits come
from `ReplicaEngine`, with vLLM's `/metrics` and `/health`, so routers and probers built for vLLM
replicas can be tested and benchmarked without GPUs.

Streaming sends the role chunk with the first token's text when the engine says the first token is
out, and the rest of the text when decoding ends (the engine models decode as one interval, so the
tail arrives as a burst rather than paced per token).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from agentstream.doubles.replica_emulator.chat import (
    ChatRequest,
    ChunkWriter,
    completion_body,
    error_body,
    parse_chat_request,
    reply_text,
    text_chunks,
    usage,
)
from agentstream.doubles.replica_emulator.engine import GenerationResult, ReplicaEngine
from agentstream.doubles.replica_emulator.metrics import CONTENT_TYPE, metrics_registry, render_metrics
from agentstream.doubles.replica_emulator.profile import ReplicaProfile
from agentstream.doubles.scripted_model.wire import BadRequest


def _json(obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(obj), status_code=status, headers=headers, media_type="application/json")


def _bad_request(message: str) -> Response:
    return _json(error_body(message), 400)


class ReplicaEmulator:
    """One emulated replica: the engine (timing + KV cache) and the ASGI app in front of it.

    Every state change happens between awaits on one event loop, so no locks are needed.
    """

    def __init__(self, replica_id: str, profile: ReplicaProfile, model_name: str = "emulated-8b") -> None:
        self.replica_id = replica_id
        self.model_name = model_name
        self.engine = ReplicaEngine(profile)
        self.metrics = metrics_registry(self.engine, model_name)
        self._ids = itertools.count(1)
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/health", self._health, methods=["GET"]),
                Route("/metrics", self._metrics, methods=["GET"]),
                Route("/_emulator/stats", self._stats, methods=["GET"]),
                Route("/_emulator/reset", self._reset, methods=["POST"]),
            ]
        )
        self.app.state.emulator = self

    def stats(self) -> dict[str, Any]:
        engine = self.engine
        cache = engine.cache
        return {
            "replica_id": self.replica_id,
            "model": self.model_name,
            "running": engine.running,
            "waiting": engine.waiting,
            "used_tokens": cache.used_tokens,
            "capacity_tokens": None if cache.unlimited else cache.capacity_tokens,
            "unlimited_kv": cache.unlimited,
            "resident_sessions": len(cache.sessions),
            "completed": engine.completed,
            "generated_tokens": engine.generated_tokens,
            "counters": cache.counters.as_dict(),
        }

    # -- handlers ---------------------------------------------------------------------------

    async def _chat(self, request: Request) -> Response:
        try:
            chat = parse_chat_request(await request.body())
        except BadRequest as exc:
            return _bad_request(f"invalid request: {exc}")
        reserve = chat.prompt_tokens + chat.output_tokens
        capacity = self.engine.cache.capacity_tokens
        if reserve > capacity:
            # vLLM answers a request longer than the cache can ever hold with a 400 as well.
            return _bad_request(f"prompt ({chat.prompt_tokens}) + max_tokens ({chat.output_tokens}) exceed {capacity}")
        reply_id = f"chatcmpl-emu-{self.replica_id}-{next(self._ids)}"
        created = int(time.time())
        headers = {"x-request-id": reply_id, "x-emulator-replica": self.replica_id}
        if chat.stream:
            return StreamingResponse(
                self._stream(chat, reply_id, created), media_type="text/event-stream", headers=headers
            )
        result = await self.engine.generate(chat.session, chat.prompt_tokens, chat.output_tokens)
        headers.update(_timing_headers(result))
        text = reply_text(result.output_tokens)
        body = completion_body(reply_id, created, self.model_name, text, _usage(chat, result))
        return _json(body, headers=headers)

    async def _stream(self, chat: ChatRequest, reply_id: str, created: int) -> AsyncIterator[bytes]:
        writer = ChunkWriter(reply_id, created, self.model_name, chat.include_usage)
        first = asyncio.Event()
        task = asyncio.create_task(
            self.engine.generate(chat.session, chat.prompt_tokens, chat.output_tokens, first.set)
        )
        first_wait = asyncio.create_task(first.wait())
        try:
            await asyncio.wait({task, first_wait}, return_when=asyncio.FIRST_COMPLETED)
            head, rest = text_chunks(reply_text(chat.output_tokens), 4)
            if first.is_set():
                yield writer.delta({"role": "assistant", "content": head})
            result = await task  # re-raises an engine failure before the first token
            if not first.is_set():
                yield writer.delta({"role": "assistant", "content": head})
            for piece in rest:
                yield writer.delta({"content": piece})
            yield writer.delta({}, "length")
            if chat.include_usage:
                yield writer.usage(_usage(chat, result))
            yield b"data: [DONE]\n\n"
        finally:
            first_wait.cancel()
            # The client went away mid-stream: stop the emulated request so its slot is freed.
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _models(self, request: Request) -> Response:
        cache = self.engine.cache
        card = {
            "id": self.model_name,
            "object": "model",
            "created": 0,
            "owned_by": "agentstream-replica-emulator",
            "root": self.model_name,
            "parent": None,
            "max_model_len": None if cache.unlimited else cache.capacity_tokens,
        }
        return _json({"object": "list", "data": [card]})

    async def _health(self, request: Request) -> Response:
        return Response(status_code=200)

    async def _metrics(self, request: Request) -> Response:
        return Response(render_metrics(self.metrics), media_type=CONTENT_TYPE)

    async def _stats(self, request: Request) -> Response:
        return _json(self.stats())

    async def _reset(self, request: Request) -> Response:
        self.engine.reset()
        return _json({"ok": True})


def _usage(chat: ChatRequest, result: GenerationResult) -> dict[str, Any]:
    return usage(chat.prompt_tokens, result.cached_tokens, result.output_tokens)


def _timing_headers(result: GenerationResult) -> dict[str, str]:
    # Emulated, unscaled-back durations: what a client on this replica experiences.
    return {
        "x-emulator-ttft-ms": f"{result.ttft_s * 1000:.3f}",
        "x-emulator-queued-ms": f"{result.queued_s * 1000:.3f}",
        "x-emulator-total-ms": f"{result.total_s * 1000:.3f}",
        "x-emulator-cached-tokens": str(result.cached_tokens),
    }


def make_app(replica_id: str, profile: ReplicaProfile, model_name: str = "emulated-8b") -> Starlette:
    """The ASGI app of a fresh replica; its `ReplicaEmulator` is `app.state.emulator`."""
    return ReplicaEmulator(replica_id, profile, model_name).app
