"""A large task (the run's first prompt part) goes to the blob store like a large tool result: the
RunRequested carries a preview and a handle, the orchestrator puts the handle on the task message,
and the model invoker gives the provider the whole text. Without this a 100 KB task would be
journaled again in every step's request."""

from __future__ import annotations

import logging
from collections.abc import Callable

from agentstream.blobs.errors import BlobError
from agentstream.blobs.offload import offload, over_threshold
from agentstream.blobs.store import BlobStore

KIND = "prompt"
log = logging.getLogger(__name__)


async def offload_task(
    open_store: Callable[[], BlobStore], tenant_id: str, run_id: str, task: str, threshold: int
) -> tuple[str, str]:
    """(what RunRequested.task holds, its task_blob): the task itself and "" when it is small (the
    store is not opened), or the store refuses it (it then travels inline, as before: the API caps
    a task at 100,000 characters, which a journal record holds)."""
    if not over_threshold(task, threshold):
        return task, ""
    try:
        return await offload(open_store(), tenant_id, run_id, task, KIND)
    except BlobError as exc:
        log.warning("a %d-character task stays inline in run %s: %s", len(task), run_id, exc)
        return task, ""
