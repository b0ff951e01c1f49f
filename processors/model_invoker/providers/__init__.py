"""Model provider adapters: the real OpenAI Chat Completions and Anthropic Messages clients."""

from agentstream.processors.model_invoker.providers.anthropic_messages import AnthropicMessagesProvider
from agentstream.processors.model_invoker.providers.factory import ProviderKind, make_provider
from agentstream.processors.model_invoker.providers.openai_chat import OpenAIChatProvider
from agentstream.processors.model_invoker.providers.retry import RetryPolicy, complete_with_retries

__all__ = [
    "AnthropicMessagesProvider",
    "OpenAIChatProvider",
    "ProviderKind",
    "RetryPolicy",
    "complete_with_retries",
    "make_provider",
]
