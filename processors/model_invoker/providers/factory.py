"""Builds a provider adapter from configuration."""

from __future__ import annotations

from typing import Literal

from agentstream.llm import ModelProvider
from agentstream.processors.model_invoker.providers.anthropic_messages import AnthropicMessagesProvider
from agentstream.processors.model_invoker.providers.http1 import HttpClient
from agentstream.processors.model_invoker.providers.openai_chat import OpenAIChatProvider

ProviderKind = Literal["openai", "anthropic"]


def make_provider(
    kind: ProviderKind,
    base_url: str,
    api_key: str | None,
    *,
    timeout_s: float = 60.0,
    stream: bool = False,
    client: HttpClient | None = None,
) -> ModelProvider:
    if kind == "openai":
        return OpenAIChatProvider(base_url, api_key, timeout_s=timeout_s, stream=stream, client=client)
    if kind == "anthropic":
        return AnthropicMessagesProvider(base_url, api_key, timeout_s=timeout_s, stream=stream, client=client)
    raise ValueError(f"unknown provider kind {kind!r} (expected 'openai' or 'anthropic')")
