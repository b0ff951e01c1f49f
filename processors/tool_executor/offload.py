"""The tool executor's side of blob offload (agentstream/blobs/offload.py): a result larger than
the threshold goes to the blob store before its ToolCallCompleted is journaled."""

from __future__ import annotations

import logging
from collections.abc import Callable

from agentstream.blobs import BlobError, BlobStore
from agentstream.blobs.offload import offload, over_threshold
from agentstream.events import ToolCallAuthorized

log = logging.getLogger(__name__)


class ResultOffloader:
    """Puts large results in the blob store. The store is opened on first use: a deployment whose
    results all stay small never touches it (nor needs its S3 server up)."""

    def __init__(self, threshold: int, open_store: Callable[[], BlobStore]) -> None:
        self.threshold = threshold
        self._open_store = open_store
        self._store: BlobStore | None = None

    def wants(self, content: str) -> bool:
        return over_threshold(content, self.threshold)

    async def put(self, request: ToolCallAuthorized, content: str) -> tuple[str, str] | None:
        """(the preview with its marker, the handle), or None when the store refused it (too
        large, unreachable): the result then stays inline, cut to the journal's cap like before."""
        try:
            if self._store is None:
                self._store = self._open_store()
            # Content-addressed: a call run again after a crash puts the same bytes, same handle.
            return await offload(self._store, request.tenant_id, request.run_id, content)
        except BlobError as exc:
            log.warning("tool result of call %s kept inline (cut): %s: %s", request.call_id, type(exc).__name__, exc)
            return None
