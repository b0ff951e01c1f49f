"""The model invoker process: performs LlmCallRequested events through the model router."""

from __future__ import annotations

from agentstream.blobs.factory import open_blob_store
from agentstream.calls import CallLedgerCore, Clearances, concerns_model_calls, cost_clearance
from agentstream.config import Settings
from agentstream.events import Event, LlmCallCompleted, LlmCallDispatched, LlmCallFailed, LlmCallRequested, RunEvent
from agentstream.kafka.journal import RecordFactory
from agentstream.kafka.producer import AsyncProducer
from agentstream.observability.genai import never_trace, traced_chat
from agentstream.process import Built
from agentstream.processors.model_invoker.blobs import BlobResolver
from agentstream.processors.model_invoker.invoke import ModelInvoker
from agentstream.processors.model_invoker.providers.retry import RetryPolicy
from agentstream.processors.model_invoker.router import ModelRouter, PinnedSettings
from agentstream.processors.model_invoker.routes import ROUTES_ENV, RouteError, RouteTable
from agentstream.settings import KvSettings


def _result_of(event: Event) -> str | None:
    if isinstance(event, LlmCallCompleted) or (isinstance(event, LlmCallFailed) and event.final):
        return event.call_id
    return None


def dispatch_clearance(kv: KvSettings) -> frozenset[str]:
    """With a pool of replicas behind the KV-affinity dispatcher (AGENTSTREAM_REPLICAS), every call
    waits for the dispatcher's choice of replica, which holds the run's KV cache."""
    return frozenset({"LlmCallDispatched"}) if kv.replicas else frozenset()


def pool_problem(pool: dict[str, str], event: Event) -> str | None:
    """Why a dispatch must not count: it names a replica or URL outside the configured pool. The
    invoker sends the platform's model key to the URL it is given, so the URL must be one of ours
    however well the dispatch is signed."""
    if not isinstance(event, LlmCallDispatched):
        return None
    if pool.get(event.replica) != event.url.rstrip("/"):
        return (f"LlmCallDispatched names replica {event.replica!r} at {event.url!r}, which is not in the configured "
                f"pool ({', '.join(sorted(pool)) or 'empty'}); the call is not sent there")  # fmt: skip
    return None


def _route_table(settings: Settings) -> RouteTable:
    model = settings.model
    if model.routes is None and not model.base_url:
        raise SystemExit(
            "AGENTSTREAM_MODEL_BASE_URL is not set: point it at an OpenAI-compatible or Anthropic endpoint"
            f" (or name a routes file in {ROUTES_ENV})"
        )
    try:
        return RouteTable.from_model(model)
    except RouteError as exc:
        raise SystemExit(str(exc)) from None


async def build(settings: Settings, records: RecordFactory, producer: AsyncProducer) -> Built:
    model = settings.model
    pinned = PinnedSettings(model.api_key, model.timeout_s, model.max_concurrency, model.stream)
    router = ModelRouter(
        _route_table(settings),
        RetryPolicy(max_attempts=model.max_attempts, base_delay_s=model.retry_base_s),
        pinned=pinned,
    )
    invoker = ModelInvoker(router)
    # The configured replicas, name -> URL: the only places a dispatched call may be sent.
    pool = dict(settings.kv.replicas)
    blobs = BlobResolver(lambda: open_blob_store(settings), model.max_prompt_bytes)

    async def perform(request: LlmCallRequested, clearances: Clearances) -> list[RunEvent]:
        # Offloaded tool results get their full text back here, after the journal, before the provider.
        resolved = await blobs.resolve(request)
        if isinstance(resolved, LlmCallFailed):
            return [resolved]
        # A replica chosen by the KV dispatcher, when one is deployed and this call requires it.
        dispatched = clearances.get("LlmCallDispatched")
        pinned = dispatched.url if isinstance(dispatched, LlmCallDispatched) else None
        if dispatched is not None and pool_problem(pool, dispatched) is not None:
            pinned = None  # never reached (vetted on consume); kept so no path sends the key elsewhere
        return await invoker.perform(resolved, pinned)

    never_trace(model.api_key)  # kept out of span content even when the operator opts in to content
    core = CallLedgerCore(
        "model-invoker",
        LlmCallRequested,
        _result_of,
        lambda request, clearances: traced_chat(request, lambda: perform(request, clearances)),
        frozenset({"LlmCallCompleted", "LlmCallFailed"}),
        requires=cost_clearance(settings.cost.governor) | dispatch_clearance(settings.kv),
        concerns=concerns_model_calls,
    )
    return Built(core=core, cleanup=[router.aclose], vet=[lambda event: pool_problem(pool, event)])
