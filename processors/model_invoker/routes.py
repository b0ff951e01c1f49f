"""The route table: which providers serve which model tier, in order of preference.

Loaded from the YAML (or JSON, which is YAML) file named by `AGENTSTREAM_MODEL_ROUTES`::

    providers:
      local:                         # a name of your choosing; it is journaled as the provider
        kind: openai                 # openai (any Chat Completions server) | anthropic
        base_url: http://vllm:8000   # with or without /v1
        api_key_env: LOCAL_KEY       # optional: the env var holding the API key
        timeout_s: 30                # optional (60): deadline for one attempt
        max_concurrency: 16          # optional (32): the bulkhead, calls in flight at once
        stream: false                # optional (false)
      claude:
        kind: anthropic
        base_url: https://api.anthropic.com
        api_key_env: ANTHROPIC_API_KEY
    tiers:                           # tier -> candidates, tried in order
      small:    [{provider: local, model: qwen3-8b}, {provider: claude, model: claude-haiku-4-5}]
      frontier: [{provider: claude, model: claude-sonnet-4-5}]
      default:  [{provider: claude}] # optional; a route without `model` uses the request's model

A request whose tier is empty or not listed uses `default`; without a `default` tier, the first
tier listed serves as the default. When `AGENTSTREAM_MODEL_ROUTES` is unset, one provider built
from `ModelSettings` serves every tier with the request's own model (the behaviour before routing).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from agentstream.config import ModelSettings
from agentstream.llm import ModelProvider
from agentstream.processors.model_invoker.providers import AnthropicMessagesProvider, OpenAIChatProvider
from agentstream.settings.environ import named

ROUTES_ENV = "AGENTSTREAM_MODEL_ROUTES"
DEFAULT_TIER = "default"


@dataclass(frozen=True, slots=True)
class Route:
    provider: str
    model: str = ""  # empty: the request's own model


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    name: str
    kind: Literal["openai", "anthropic"]
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float = 60.0
    max_concurrency: int = 32
    stream: bool = False

    def build(self) -> ModelProvider:
        if self.kind == "anthropic":
            return AnthropicMessagesProvider(
                self.base_url, self.api_key, timeout_s=self.timeout_s, stream=self.stream, name=self.name
            )
        return OpenAIChatProvider(
            self.base_url, self.api_key, timeout_s=self.timeout_s, stream=self.stream, name=self.name
        )


class RouteError(ValueError):
    """The routes file is malformed; the message says where."""


def _positive(value: Any, what: str, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise RouteError(f"{what} must be a positive number")
    return float(value)


def _provider(name: str, d: Any, lookup: Callable[[str], str | None]) -> ProviderSpec:
    if not isinstance(d, Mapping):
        raise RouteError(f"providers.{name} must be a mapping")
    kind = d.get("kind")
    if kind not in ("openai", "anthropic"):
        raise RouteError(f"providers.{name}.kind must be openai or anthropic, not {kind!r}")
    base_url = d.get("base_url")
    if not isinstance(base_url, str) or not base_url:
        raise RouteError(f"providers.{name}.base_url is required")
    key_env = d.get("api_key_env")
    if key_env is not None and not isinstance(key_env, str):
        raise RouteError(f"providers.{name}.api_key_env must be an environment variable name")
    return ProviderSpec(
        name=name,
        kind=kind,
        base_url=base_url,
        api_key=lookup(key_env) if key_env else None,
        timeout_s=_positive(d.get("timeout_s"), f"providers.{name}.timeout_s", 60.0),
        max_concurrency=int(_positive(d.get("max_concurrency"), f"providers.{name}.max_concurrency", 32)),
        stream=bool(d.get("stream", False)),
    )


def _routes(tier: str, items: Any, providers: Mapping[str, ProviderSpec]) -> tuple[Route, ...]:
    if not isinstance(items, list) or not items:
        raise RouteError(f"tiers.{tier} must be a non-empty list of {{provider, model}}")
    out: list[Route] = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or item.get("provider") not in providers:
            raise RouteError(f"tiers.{tier}[{i}] must name a provider from `providers` ({', '.join(providers)})")
        model = item.get("model", "")
        if not isinstance(model, str):
            raise RouteError(f"tiers.{tier}[{i}].model must be a string")
        out.append(Route(str(item["provider"]), model))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class RouteTable:
    providers: Mapping[str, ProviderSpec]
    tiers: Mapping[str, tuple[Route, ...]]  # always holds DEFAULT_TIER

    def candidates(self, tier: str) -> tuple[Route, ...]:
        return self.tiers.get(tier) or self.tiers[DEFAULT_TIER]

    @staticmethod
    def from_mapping(d: Any, env: Mapping[str, str] | None = None) -> RouteTable:
        """`env`: where the providers' `api_key_env` variables are looked up (default: this process's)."""
        lookup = named if env is None else env.get
        if not isinstance(d, Mapping):
            raise RouteError("the routes file must be a mapping with `providers` and `tiers`")
        raw_providers, raw_tiers = d.get("providers"), d.get("tiers")
        if not isinstance(raw_providers, Mapping) or not raw_providers:
            raise RouteError("`providers` must be a non-empty mapping")
        if not isinstance(raw_tiers, Mapping) or not raw_tiers:
            raise RouteError("`tiers` must be a non-empty mapping")
        providers = {str(n): _provider(str(n), p, lookup) for n, p in raw_providers.items()}
        tiers = {str(t): _routes(str(t), items, providers) for t, items in raw_tiers.items()}
        tiers.setdefault(DEFAULT_TIER, next(iter(tiers.values())))
        return RouteTable(providers, tiers)

    @staticmethod
    def load(path: str | Path, env: Mapping[str, str] | None = None) -> RouteTable:
        try:
            raw = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise RouteError(f"cannot read routes file {path}: {exc}") from None
        return RouteTable.from_mapping(raw, env)

    @staticmethod
    def from_settings(model: ModelSettings) -> RouteTable:
        """One provider for every tier, named as its adapter names itself (`openai`, `anthropic`)."""
        if model.provider not in ("openai", "anthropic"):
            raise RouteError(f"AGENTSTREAM_MODEL_PROVIDER must be openai or anthropic, not {model.provider!r}")
        kind: Literal["openai", "anthropic"] = "openai" if model.provider == "openai" else "anthropic"
        spec = ProviderSpec(
            kind, kind, model.base_url, model.api_key, model.timeout_s, model.max_concurrency, model.stream
        )
        return RouteTable({kind: spec}, {DEFAULT_TIER: (Route(kind),)})

    @staticmethod
    def from_model(model: ModelSettings) -> RouteTable:
        """The routes file `model.routes` (AGENTSTREAM_MODEL_ROUTES) names, else one provider from `model`."""
        return RouteTable.load(model.routes) if model.routes is not None else RouteTable.from_settings(model)

    @staticmethod
    def from_env(model: ModelSettings, env: Mapping[str, str]) -> RouteTable:
        """As `from_model`, with the routes file and the keys it names looked up in `env` instead."""
        path = env.get(ROUTES_ENV, "").strip()
        return RouteTable.load(path, env) if path else RouteTable.from_settings(model)
