"""Price tables, loaded from JSON (the packaged `prices.json`, or `AGENTSTREAM_PRICES`).

A table is immutable once published: prices change by adding a version, and every settlement
records the version it used, so replaying a journal never re-prices a past call.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

PER_MILLION = 1_000_000


class PriceTableError(ValueError):
    """A price file that cannot be trusted to bound spend: refuse it rather than guess."""


@dataclass(frozen=True, slots=True)
class ModelPrice:
    input: float  # dollars per million uncached input tokens
    cached_input: float
    output: float

    def cost(self, input_tokens: int, cached_input_tokens: int, output_tokens: int) -> float:
        cached = max(0, min(cached_input_tokens, input_tokens))
        return (
            (input_tokens - cached) * self.input + cached * self.cached_input + output_tokens * self.output
        ) / PER_MILLION

    def worst_case(self, input_tokens: int, output_tokens: int) -> float:
        """No cache hit assumed: an upper bound whatever the provider reports as cached."""
        return (input_tokens * self.input + output_tokens * self.output) / PER_MILLION


@dataclass(frozen=True, slots=True)
class PriceTable:
    version: str
    models: dict[str, ModelPrice]
    tools: dict[str, float]  # dollars per call; tools not listed cost nothing

    def model(self, name: str) -> ModelPrice:
        """An unknown model is priced as the most expensive one listed: a budget must never be
        overshot because a model was missing from the table."""
        price = self.models.get(name)
        return price if price is not None else self.most_expensive()

    def most_expensive(self, names: list[str] | None = None) -> ModelPrice:
        chosen = [self.model(n) for n in names] if names else list(self.models.values())
        return ModelPrice(
            input=max(p.input for p in chosen),
            cached_input=max(p.cached_input for p in chosen),
            output=max(p.output for p in chosen),
        )

    def tool(self, name: str) -> float:
        return self.tools.get(name, 0.0)


@dataclass(frozen=True, slots=True)
class PriceBook:
    """Every published version; `current` prices new reservations."""

    versions: dict[str, PriceTable]
    current: PriceTable

    def get(self, version: str) -> PriceTable:
        return self.versions.get(version, self.current)


def _price(raw: Any, where: str) -> ModelPrice:
    try:
        price = ModelPrice(float(raw["input"]), float(raw["cached_input"]), float(raw["output"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise PriceTableError(f"{where}: needs numeric input, cached_input and output ({exc})") from exc
    if min(price.input, price.cached_input, price.output) < 0:
        raise PriceTableError(f"{where}: prices must not be negative")
    return price


def parse_price_book(raw: Any) -> PriceBook:
    if not isinstance(raw, dict) or not isinstance(raw.get("versions"), list) or not raw["versions"]:
        raise PriceTableError("a price file needs a non-empty `versions` list")
    tables: dict[str, PriceTable] = {}
    for entry in raw["versions"]:
        version = str(entry.get("version", ""))
        if not version or version in tables:
            raise PriceTableError(f"every price version needs a unique `version` (got {version!r})")
        models = {name: _price(p, f"{version}/{name}") for name, p in dict(entry.get("models") or {}).items()}
        if not models:
            raise PriceTableError(f"{version}: no models priced")
        tools = {name: float(cost) for name, cost in dict(entry.get("tools") or {}).items()}
        if any(cost < 0 for cost in tools.values()):
            raise PriceTableError(f"{version}: tool prices must not be negative")
        tables[version] = PriceTable(version, models, tools)
    return PriceBook(tables, tables[str(raw["versions"][-1]["version"])])


def load_price_book(path: Path) -> PriceBook:
    return parse_price_book(orjson.loads(path.read_bytes()))


def default_price_book(override: Path | None = None) -> PriceBook:
    """The table at `override` (the cost governor's AGENTSTREAM_PRICES), else the packaged one."""
    return load_price_book(override if override else Path(__file__).with_name("prices.json"))
