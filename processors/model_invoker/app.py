"""The model invoker process: performs LlmCallRequested events through the configured provider."""

from __future__ import annotations

from typing import Literal

from agentstream.calls import CallLedgerCore
from agentstream.config import Settings
from agentstream.events import Event, LlmCallCompleted, LlmCallFailed, LlmCallRequested
from agentstream.kafka.journal import RecordFactory
from agentstream.kafka.producer import AsyncProducer
from agentstream.process import Built
from processors.model_invoker.invoke import ModelInvoker
from processors.model_invoker.providers.factory import make_provider
from processors.model_invoker.providers.retry import RetryPolicy


def _result_of(event: Event) -> str | None:
    if isinstance(event, LlmCallCompleted) or (isinstance(event, LlmCallFailed) and event.final):
        return event.call_id
    return None


async def build(settings: Settings, records: RecordFactory, producer: AsyncProducer) -> Built:
    model = settings.model
    if not model.base_url:
        raise SystemExit(
            "AGENTSTREAM_MODEL_BASE_URL is not set: point it at an OpenAI-compatible or Anthropic endpoint"
        )
    if model.provider not in ("openai", "anthropic"):
        raise SystemExit(f"AGENTSTREAM_MODEL_PROVIDER must be openai or anthropic, not {model.provider!r}")
    kind: Literal["openai", "anthropic"] = "openai" if model.provider == "openai" else "anthropic"
    provider = make_provider(kind, model.base_url, model.api_key, timeout_s=model.timeout_s, stream=model.stream)
    invoker = ModelInvoker(provider, RetryPolicy(max_attempts=model.max_attempts), model.max_concurrency)
    core = CallLedgerCore(
        "model-invoker", LlmCallRequested, _result_of, invoker.perform, frozenset({"LlmCallCompleted", "LlmCallFailed"})
    )
    return Built(core=core, cleanup=[provider.aclose])
