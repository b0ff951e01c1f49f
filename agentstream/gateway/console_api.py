"""What the web console reads beyond the run API's basics: the runs list with its filters over
every run on record, spend over time, and a run's events with huge fields cut (and each one whole
on demand). Tenant-scoped like every route: the key's tenant is the only one queried.

The list and the series read the run catalog (catalog.py: SQLite on disk, fed by the projection),
never the projection's views: those hold live and recent runs only."""

from __future__ import annotations

import bisect
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response

from agentstream.blobs import BlobAccessDenied, BlobError, BlobHandle, BlobHandleInvalid, BlobMissing
from agentstream.blobs.offload import read_text
from agentstream.contract.queries import CURSOR, CostSeriesQuery, GetRunEventQuery, ListRunsQuery, Query
from agentstream.contract.resources import CostLine, CostPoint, CostSeries, RunEventDetail
from agentstream.gateway.catalog import RunCatalog, RunFilter, SeriesRow
from agentstream.gateway.errors import ApiError, model_response, not_found
from agentstream.gateway.memory_api import MemoryApi
from agentstream.gateway.projection import RunIndex
from agentstream.gateway.views import StoredEvent

Q = TypeVar("Q", bound=Query)
BUCKETS_MS = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000, "6h": 21_600_000, "1d": 86_400_000}
MAX_POINTS = 5000  # buckets one answer may span: a year of minutes is cut to its latest 5000
OTHER = "(other)"


class _Caller(Protocol):
    @property
    def tenant_id(self) -> str: ...


ConsoleHandler = Callable[[Request, _Caller], Awaitable[Response]]
ParseQuery = Callable[[type[Q], Request], Q]


# -- the runs list -------------------------------------------------------------------------------


async def list_runs(index: RunIndex, tenant_id: str, query: ListRunsQuery) -> Response:
    """A page of the tenant's runs: the JSON of each stored Run resource, as stored (no re-parse)."""
    if index.history is not None:
        await index.history.index_read()  # just started: runs recorded before it are still being read
    catalog = index.catalog
    if query.tenant is not None and query.tenant != tenant_id:
        return _page([], None)  # another tenant's runs do not exist for this key
    where = RunFilter(query.status, query.tool, query.flagged, query.min_cost_usd, query.max_cost_usd, query.q)
    newest = query.order == "newest"
    rows = catalog.runs(tenant_id, where, decode_cursor(query.cursor), query.limit + 1, newest=newest)
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    cursor = f"{rows[-1][0]}.{rows[-1][1].encode().hex()}" if more and rows else None
    return _page([resource for _c, _r, resource in rows], cursor)


def _page(resources: list[bytes], cursor: str | None) -> Response:
    body = b'{"data":[' + b",".join(resources) + b'],"next_cursor":' + orjson.dumps(cursor) + b"}"
    return Response(body, media_type="application/json")


def decode_cursor(raw: str | None) -> tuple[int, str] | None:
    """Every string of the documented shape is a position: (created, run id) compares with any run's."""
    if raw is None:
        return None
    if not CURSOR.fullmatch(raw):
        raise ApiError(400, "invalid_parameter", "cursor is not one this API returned", field="cursor")
    created, run_hex = raw.split(".", 1)
    return int(created), bytes.fromhex(run_hex).decode(errors="replace")


# -- spend over time -----------------------------------------------------------------------------


def cost_series(catalog: RunCatalog, tenant_id: str, query: CostSeriesQuery, now_ms: int | None = None) -> Response:
    bucket_ms = BUCKETS_MS[query.bucket]
    until = query.until_ms if query.until_ms is not None else now_ms or int(time.time() * 1000)
    # A window wider than MAX_POINTS buckets keeps its latest ones (the answer's since_ms says where
    # it starts); an empty window (since at or after until) has nothing in it.
    since = max(query.since_ms if query.since_ms is not None else until - 86_400_000, until - MAX_POINTS * bucket_ms)
    since = min(since, until)
    rows, total = catalog.series(tenant_id, query.by, bucket_ms, since, until, query.run_id)
    lines = _lines(rows, query.top)
    body = CostSeries(by=query.by, bucket_ms=bucket_ms, since_ms=since, until_ms=until, total_usd=round(total, 9),
                      series=lines)  # fmt: skip
    return model_response(body)


def _lines(rows: list[SeriesRow], top: int) -> list[CostLine]:
    """The `top` most expensive keys, each a line; every other key summed into one `(other)` line."""
    totals: dict[str, float] = {}
    for row in rows:
        totals[row.key] = totals.get(row.key, 0.0) + row.usd
    ranked = sorted(totals, key=lambda k: (-totals[k], k))
    shown = set(ranked[:top])
    points: dict[str, dict[int, list[float]]] = {}
    for row in rows:
        key = row.key if row.key in shown else OTHER
        point = points.setdefault(key, {}).setdefault(row.bucket_ms, [0.0, 0])
        point[0] += row.usd
        point[1] += row.calls
    order = ranked[:top] + ([OTHER] if OTHER in points else [])
    return [
        CostLine(
            key=key,
            total_usd=round(sum(p[0] for p in points[key].values()), 9),
            calls=int(sum(p[1] for p in points[key].values())),
            points=[CostPoint(t_ms=t, usd=round(p[0], 9), calls=int(p[1])) for t, p in sorted(points[key].items())],
        )
        for key in order
    ]


# -- events, cut and whole -----------------------------------------------------------------------


def truncated_sse(stored: StoredEvent, run_id: str, limit: int) -> bytes:
    """The event's SSE message with every text field over `limit` characters cut (and said so)."""
    if limit <= 0 or len(stored.sse) <= limit:
        return stored.sse  # nothing in it can be longer: sent as encoded once, for every subscriber
    head, _, data = stored.sse.partition(b"\ndata: ")
    record: dict[str, Any] = orjson.loads(data)
    cut = {name: len(value) for name, value in record.items() if isinstance(value, str) and len(value) > limit}
    if not cut:
        return stored.sse
    for name in cut:
        record[name] = record[name][:limit]
    record["truncated"] = cut
    record["more_url"] = f"/v1/runs/{run_id}/events/{stored.offset}"
    return head + b"\ndata: " + orjson.dumps(record) + b"\n\n"


async def get_run_event(index: RunIndex, memory: MemoryApi | None, request: Request, tenant_id: str,
                        blob: bool) -> Response:  # fmt: skip
    raw = request.path_params["offset"]
    view = await index.find(tenant_id, request.path_params["run_id"])
    if view is None:
        raise not_found()
    if not raw.isdigit() or len(raw) > 18:
        raise ApiError(404, "not_found", "the run has no event at this offset")
    offset = int(raw)
    events = list(view.events)
    at = bisect.bisect_left([e.offset for e in events], offset)
    if at == len(events) or events[at].offset != offset:
        raise ApiError(404, "not_found", "the run has no event at this offset")
    record: dict[str, Any] = orjson.loads(events[at].sse.partition(b"\ndata: ")[2])
    handle = record.get("result_blob")
    if blob and isinstance(handle, str) and handle:
        if memory is None:
            raise ApiError(404, "not_found", "this gateway reads no blob store")
        try:
            record["blob_text"] = await read_text(memory.store(), tenant_id, BlobHandle.parse(handle))
        except (BlobMissing, BlobAccessDenied, BlobHandleInvalid):
            raise ApiError(404, "not_found", "the offloaded result is not in the blob store") from None
        except BlobError as exc:
            raise ApiError(503, "blob_unreadable", f"the offloaded result cannot be read: {exc}",
                           headers={"Retry-After": "5"}) from None  # fmt: skip
    return model_response(RunEventDetail.model_validate(record))


def console_handlers(index: RunIndex, memory: MemoryApi | None, parse: ParseQuery[Any]) -> dict[str, ConsoleHandler]:
    """The gateway's handlers of `getCostSeries` and `getRunEvent` (`listRuns` calls `list_runs`)."""

    async def series(request: Request, caller: _Caller) -> Response:
        if index.history is not None:
            await index.history.index_read()  # as the list: a start's view of older runs first
        return cost_series(index.catalog, caller.tenant_id, parse(CostSeriesQuery, request))

    async def event(request: Request, caller: _Caller) -> Response:
        blob = parse(GetRunEventQuery, request).blob
        return await get_run_event(index, memory, request, caller.tenant_id, blob)

    return {"getCostSeries": series, "getRunEvent": event}
