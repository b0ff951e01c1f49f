"""Label values taken from data (a model name, a tool name, an error type) are bounded: a metric
keeps the first `limit` distinct values it sees and counts every later one as `other`, so no
caller (a tenant naming a model, registering tools) can grow a process's series without bound.
Run ids, call ids and tenants are never labels at all."""

from __future__ import annotations

from typing import Any

OTHER = "other"


class BoundedValues:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit:
            return OTHER
        self._seen.add(value)
        return value


class Series:
    """The children of one labelled metric, found by their label values with one dict lookup
    (prometheus_client's `labels()` validates and locks: about a microsecond, per event), each
    label's values bounded as above. Only in-bound value tuples are kept, so the lookup table is
    as bounded as the series."""

    def __init__(self, metric: Any, limit: int) -> None:
        self.metric = metric
        self._bounds = [BoundedValues(limit) for _ in metric._labelnames]
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            kept = tuple(bound(value) for bound, value in zip(self._bounds, values, strict=True))
            child = self.metric.labels(*kept)
            if kept == values:
                self._children[values] = child
        return child
