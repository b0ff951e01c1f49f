"""Versioned price tables: what a model call or a tool call costs, from its recorded usage."""

from agentstream.pricing.table import ModelPrice, PriceBook, PriceTable, default_price_book

__all__ = ["ModelPrice", "PriceBook", "PriceTable", "default_price_book"]
