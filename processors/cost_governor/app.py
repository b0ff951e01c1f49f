"""The cost governor process: the pure core, the price book and a live view of the control topic."""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from agentstream.budgets.controls import ControlReader
from agentstream.config import Settings
from agentstream.kafka.journal import RecordFactory
from agentstream.kafka.producer import AsyncProducer
from agentstream.pricing import ModelPrice, PriceTable, default_price_book
from agentstream.process import Built
from agentstream.processors.cost_governor.core import CostGovernorCore, WorstPrice, requested_price


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


def routed_models(routes_file: Path) -> list[str]:
    """Every model the model router may pick: with routing on, a call may be answered by any of
    them, so its worst case is priced at the most expensive."""
    raw = yaml.safe_load(Path(routes_file).read_text()) or {}
    return sorted({str(r["model"]) for routes in (raw.get("tiers") or {}).values() for r in routes if "model" in r})


def worst_price_for(routes_file: Path | None) -> WorstPrice:
    if not routes_file:
        return requested_price
    models = routed_models(routes_file)

    def worst(model: str, table: PriceTable) -> ModelPrice:
        return table.most_expensive([model, *models])

    return worst


async def build(settings: Settings, records: RecordFactory, producer: AsyncProducer) -> Built:
    reader = ControlReader(settings)
    await reader.start()
    core = CostGovernorCore(
        default_price_book(settings.cost.prices),
        reader.controls,
        wall_clock_ms,
        worst_price=worst_price_for(settings.model.routes),
        bytes_per_token=settings.cost.bytes_per_token,
    )

    async def close() -> None:
        reader.close()

    return Built(core=core, before_batch=[reader.poll], cleanup=[close])
