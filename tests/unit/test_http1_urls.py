"""The HTTP/1.1 client's refusals that need no server: a proxy scheme or a URL it cannot speak is
named, and a provider built on an unusable URL fails each call instead of raising at build (the
client against real servers: tests/integration/test_http1.py)."""

from __future__ import annotations

import pytest

from agentstream.llm import ChatRequest, Message, ProviderError
from agentstream.processors.model_invoker.providers import OpenAIChatProvider
from agentstream.processors.model_invoker.providers.http1 import HttpClient


def test_unsupported_proxy_schemes_and_urls_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "socks5://127.0.0.1:1080")
    with pytest.raises(ValueError, match="socks5"):
        HttpClient().target("https://api.example.com/v1/messages", {})
    with pytest.raises(ValueError, match="not an http"):
        HttpClient().target("ftp://example.com/", {})


async def test_a_provider_with_an_unusable_url_fails_each_call_without_raising_at_build() -> None:
    provider = OpenAIChatProvider("localhost:9001", None)  # no scheme: a typo in AGENTSTREAM_REPLICAS
    with pytest.raises(ProviderError) as info:
        await provider.complete(
            ChatRequest(model="m", messages=(Message("user", "hi"),), tools=(), max_tokens=8, call_id="c1")
        )
    assert info.value.retryable and info.value.error_type == "connection" and "not an http" in str(info.value)
    await provider.aclose()
