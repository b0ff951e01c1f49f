"""Price tables: versions kept, costs from usage, unknown models priced at the dearest, bad files refused."""

from __future__ import annotations

import pytest

from agentstream.pricing import default_price_book
from agentstream.pricing.table import PriceTableError, parse_price_book

BOOK = {
    "versions": [
        {"version": "v1", "models": {"a": {"input": 1, "cached_input": 0.5, "output": 2}}, "tools": {"t": 0.25}},
        {"version": "v2", "models": {"a": {"input": 2, "cached_input": 1, "output": 4},
                                     "b": {"input": 10, "cached_input": 1, "output": 30}}},
    ]
}  # fmt: skip


def test_costs_come_from_usage_at_the_recorded_version() -> None:
    book = parse_price_book(BOOK)
    assert book.current.version == "v2"
    assert book.get("v1").model("a").cost(1_000_000, 400_000, 1_000_000) == pytest.approx(0.6 + 0.2 + 2.0)
    assert book.get("v2").model("a").cost(1_000_000, 0, 0) == pytest.approx(2.0)
    assert book.get("v1").tool("t") == 0.25 and book.get("v1").tool("other") == 0.0
    # cached tokens above the prompt are capped: a provider's report cannot make a call cheaper than free
    assert book.current.model("a").cost(10, 50, 0) == pytest.approx(10 * 1 / 1e6)


def test_an_unknown_model_is_priced_as_the_most_expensive() -> None:
    price = parse_price_book(BOOK).current.model("never-heard-of-it")
    assert (price.input, price.cached_input, price.output) == (10, 1, 30)
    assert price.worst_case(100, 10) == pytest.approx((100 * 10 + 10 * 30) / 1e6)


@pytest.mark.parametrize(
    "raw",
    [
        {},
        {"versions": []},
        {"versions": [{"version": "v", "models": {}}]},
        {"versions": [{"version": "v", "models": {"a": {"input": 1}}}]},
        {"versions": [{"version": "v", "models": {"a": {"input": -1, "cached_input": 0, "output": 0}}}]},
        {
            "versions": [
                {"version": "v", "models": {"a": {"input": 1, "cached_input": 0, "output": 0}}, "tools": {"t": -1}}
            ]
        },
        {"versions": [{"version": "v", "models": {"a": {"input": 1, "cached_input": 0, "output": 0}}}] * 2},
    ],
)
def test_a_price_file_that_cannot_bound_spend_is_refused(raw: object) -> None:
    with pytest.raises(PriceTableError):
        parse_price_book(raw)


def test_the_packaged_table_loads() -> None:
    book = default_price_book()
    assert "scripted" in book.current.models and book.current.version
