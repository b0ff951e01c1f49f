"""The model invoker's side of blob offload (agentstream/blobs/offload.py): right before the
provider call, each offloaded tool result in the request's messages gets its full text back from
the blob store, read as the run's tenant. The journal keeps the preview; the provider sees it all.

Deterministic: blobs are content-addressed and verified on read, so the same journaled request
gives the same provider request bytes on every replay."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

from agentstream import ids
from agentstream.blobs import BlobError, BlobStore
from agentstream.blobs.offload import BLOB_KEY, offloaded_bytes, resolve_messages
from agentstream.events import LlmCallFailed, LlmCallRequested
from agentstream.llm import messages_from_json, messages_to_json

PROVIDER = "blob-store"
PROMPT_TOO_LARGE = "prompt_too_large"


def error_type_of(exc: BlobError) -> str:
    """`BlobMissing` -> `blob_missing`, ...: the LlmCallFailed's error_type."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()


class BlobResolver:
    """Opens the store on first use: a deployment that never offloads never touches it."""

    def __init__(self, open_store: Callable[[], BlobStore], max_prompt_bytes: int = 8 * 1024 * 1024) -> None:
        self._open_store = open_store
        self._store: BlobStore | None = None
        self._max_prompt_bytes = max_prompt_bytes

    async def resolve(self, request: LlmCallRequested) -> LlmCallRequested | LlmCallFailed:
        """The request as the provider must see it, or the call's final, non-retryable failure
        when a blob cannot be read (missing, corrupted, another tenant's) or the prompt would pass
        the provider bound: never an empty or cut text."""
        if BLOB_KEY not in request.messages_json:
            return request
        # The handles state their sizes: a prompt a provider would refuse (or bill for megabytes)
        # fails before any blob is read, as the same request would fail on every retry.
        size = len(request.messages_json) + len(request.tools_json) + offloaded_bytes(request.messages_json)
        if size > self._max_prompt_bytes:
            return failure(request, PROMPT_TOO_LARGE, (
                f"the prompt would be ~{size} bytes with its offloaded tool results put back, over the provider "
                f"bound of {self._max_prompt_bytes} (AGENTSTREAM_MODEL_MAX_PROMPT_BYTES); turn on context "
                "management (`context` on create) to clear old results"))  # fmt: skip
        try:
            if self._store is None:
                self._store = self._open_store()
            messages = await resolve_messages(self._store, request.tenant_id, messages_from_json(request.messages_json))
        except BlobError as exc:
            return blob_failure(request, exc)
        return dataclasses.replace(request, messages_json=messages_to_json(messages))


def blob_failure(request: LlmCallRequested, exc: BlobError) -> LlmCallFailed:
    # Messages name tenant, scope and digest, never content.
    return failure(request, error_type_of(exc), f"an offloaded tool result could not be read for the prompt: {exc}")


def failure(request: LlmCallRequested, error_type: str, message: str) -> LlmCallFailed:
    return LlmCallFailed(
        event_id=ids.failed_event_id(request.call_id, 1),
        run_id=request.run_id,
        tenant_id=request.tenant_id,
        step=request.step,
        call_id=request.call_id,
        provider=PROVIDER,
        error_type=error_type,
        message=message[:2000],
        status=None,
        # Reading it again gives the same answer; a store that was down is a new call's business.
        retryable=False,
        attempt=1,
        final=True,
    )
