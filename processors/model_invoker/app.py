"""The model invoker process: performs LlmCallRequested events through the model router."""

from __future__ import annotations

import os

from agentstream.calls import CallLedgerCore, Clearances, cost_clearance
from agentstream.config import Settings
from agentstream.events import Event, LlmCallCompleted, LlmCallDispatched, LlmCallFailed, LlmCallRequested, RunEvent
from agentstream.kafka.journal import RecordFactory
from agentstream.kafka.producer import AsyncProducer
from agentstream.process import Built
from processors.model_invoker.invoke import ModelInvoker
from processors.model_invoker.providers.retry import RetryPolicy
from processors.model_invoker.router import ModelRouter, PinnedSettings
from processors.model_invoker.routes import ROUTES_ENV, RouteError, RouteTable


def _result_of(event: Event) -> str | None:
    if isinstance(event, LlmCallCompleted) or (isinstance(event, LlmCallFailed) and event.final):
        return event.call_id
    return None


def dispatch_clearance() -> frozenset[str]:
    """With a pool of replicas behind the KV-affinity dispatcher (AGENTSTREAM_REPLICAS), every call
    waits for the dispatcher's choice of replica, which holds the run's KV cache."""
    return frozenset({"LlmCallDispatched"}) if os.environ.get("AGENTSTREAM_REPLICAS", "").strip() else frozenset()


def _route_table(settings: Settings) -> RouteTable:
    model = settings.model
    if not os.environ.get(ROUTES_ENV, "").strip() and not model.base_url:
        raise SystemExit(
            "AGENTSTREAM_MODEL_BASE_URL is not set: point it at an OpenAI-compatible or Anthropic endpoint"
            f" (or name a routes file in {ROUTES_ENV})"
        )
    try:
        return RouteTable.from_env(model)
    except RouteError as exc:
        raise SystemExit(str(exc)) from None


async def build(settings: Settings, records: RecordFactory, producer: AsyncProducer) -> Built:
    model = settings.model
    pinned = PinnedSettings(model.api_key, model.timeout_s, model.max_concurrency, model.stream)
    router = ModelRouter(_route_table(settings), RetryPolicy(max_attempts=model.max_attempts), pinned=pinned)
    invoker = ModelInvoker(router)

    async def perform(request: LlmCallRequested, clearances: Clearances) -> list[RunEvent]:
        # A replica chosen by the KV dispatcher, when one is deployed and this call requires it.
        dispatched = clearances.get("LlmCallDispatched")
        return await invoker.perform(request, dispatched.url if isinstance(dispatched, LlmCallDispatched) else None)

    core = CallLedgerCore(
        "model-invoker",
        LlmCallRequested,
        _result_of,
        perform,
        frozenset({"LlmCallCompleted", "LlmCallFailed"}),
        requires=cost_clearance() | dispatch_clearance(),
    )
    return Built(core=core, cleanup=[router.aclose])
