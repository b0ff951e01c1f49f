"""`read_result`: the platform's read-back tool. A tool result offloaded to the blob store (and,
once a compaction cleared it, known to the model only by a preview and a marker naming its handle)
is read back by that handle, one slice at a time.

It reads as the run's tenant and only the run's own results: the tenant and run come from the
signed authorization (the registry host passes them), never from the arguments, so a handle of
another tenant or of another run is refused before the store is asked. Every refusal is an error
observation with its reason; a missing or damaged blob is never an empty text. Read-only and
idempotent: the same call gives the same slice (blobs are content-addressed and verified on read).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from agentstream.blobs import (
    BlobAccessDenied,
    BlobCorrupted,
    BlobError,
    BlobHandle,
    BlobHandleInvalid,
    BlobMissing,
    BlobStore,
    BlobTooLarge,
)
from agentstream.blobs.offload import read_text
from agentstream.context.compaction import READ_RESULT_TOOL
from agentstream.llm import ToolSpec
from agentstream.tooling import ToolDescriptor, ToolResult

DEFAULT_LENGTH = 16_384
MAX_LENGTH = 65_536
TIMEOUT_S = 30.0  # a blob of up to the store's cap (64 MiB) fetched from S3 and verified
_ARGUMENTS = ("handle", "offset", "length")
log = logging.getLogger(__name__)


class _Refused(Exception):
    """Why a read-back is refused; its message is what the model sees."""


def descriptor() -> ToolDescriptor:
    schema = {
        "type": "object",
        "properties": {
            "handle": {"type": "string", "minLength": 1, "maxLength": 400},
            "offset": {"type": "integer", "minimum": 0, "default": 0},
            "length": {"type": "integer", "minimum": 1, "maximum": MAX_LENGTH, "default": DEFAULT_LENGTH},
        },
        "required": ["handle"],
        "additionalProperties": False,
    }
    description = (
        "Read back a tool result of this run that was offloaded or cleared from the context, by the "
        "handle its marker names (blob:v1/...). offset and length are in characters (length up to "
        f"{MAX_LENGTH}, default {DEFAULT_LENGTH}); the answer starts with a line "
        "'[read_result: chars A-B of TOTAL]': ask again with offset=B for the rest."
    )
    return ToolDescriptor(ToolSpec(READ_RESULT_TOOL, description, schema), "builtin", "read_only",
                          idempotent=True, timeout_s=TIMEOUT_S)  # fmt: skip


def header(start: int, end: int, total: int) -> str:
    """The line before the slice: `end` is exclusive (the offset to ask for next)."""
    return f"[read_result: chars {start}-{end} of {total}]"


class ReadResultTool:
    """Runs `read_result` calls. The store is opened on first use (a deployment that never reads
    back never touches it) and may be the one the offloader writes to."""

    def __init__(self, open_store: Callable[[], BlobStore]) -> None:
        self._open_store = open_store
        self._store: BlobStore | None = None

    async def call(self, arguments: dict[str, Any], *, tenant: str, run_id: str, timeout_s: float) -> ToolResult:
        """Never raises except for cancellation: every failure is an error observation."""
        try:
            handle, offset, length = _parse(arguments)
            async with asyncio.timeout(timeout_s):
                text = await self._read(handle, tenant=tenant, run_id=run_id)
            return ToolResult(_slice(text, offset, length))
        except _Refused as exc:
            return ToolResult(f"{READ_RESULT_TOOL}: {exc}", is_error=True)
        except TimeoutError:
            return ToolResult(f"{READ_RESULT_TOOL}: the blob store did not answer within {timeout_s:g}s", is_error=True)
        except Exception as exc:  # a bug or a broken key file: an observation, not a crashed executor
            log.exception("read_result failed")
            return ToolResult(f"{READ_RESULT_TOOL} failed: {type(exc).__name__}", is_error=True)

    async def _read(self, handle: BlobHandle, *, tenant: str, run_id: str) -> str:
        # Checked here as well as by the store, so that another tenant's handle reads as such and
        # not as "another run".
        if handle.tenant_id != tenant:
            raise _Refused(_other_tenant(handle))
        if handle.scope != run_id:
            raise _Refused(f"{handle} belongs to another run ({handle.scope}); a run reads back only its own results")
        try:
            if self._store is None:
                self._store = self._open_store()
            return await read_text(self._store, tenant, handle)
        except BlobError as exc:
            raise _Refused(_reason(handle, exc)) from None

    async def aclose(self) -> None:
        if self._store is not None:
            await self._store.close()
            self._store = None


def _other_tenant(handle: BlobHandle) -> str:
    return f"{handle} belongs to another tenant; a run reads back only its own results"


def _reason(handle: BlobHandle, exc: BlobError) -> str:
    # The store's own messages may name server paths or endpoints: the model gets these instead
    # (the operator's log keeps the detail).
    match exc:
        case BlobAccessDenied():
            return _other_tenant(handle)
        case BlobMissing():
            return f"no blob {handle} (deleted with its run's retention, or never stored)"
        case BlobCorrupted():
            return f"blob {handle} failed verification (tampered or damaged); nothing of it is returned"
        case BlobTooLarge():
            return f"{handle} claims {handle.size} bytes, more than the blob store holds"
        case BlobHandleInvalid():
            return f"invalid handle: {exc}"
    log.warning("read_result of %s failed: %s: %s", handle.key, type(exc).__name__, exc)
    return f"the blob store is unavailable ({type(exc).__name__}); try again later"


def _parse(arguments: dict[str, Any]) -> tuple[BlobHandle, int, int]:
    if not isinstance(arguments, dict):
        raise _Refused("arguments must be an object")
    extra = sorted(set(arguments) - set(_ARGUMENTS))
    if extra:
        raise _Refused(f"unexpected argument(s): {', '.join(map(str, extra))} (it takes handle, offset, length)")
    raw = arguments.get("handle")
    if not isinstance(raw, str):
        raise _Refused("handle is required: the blob:v1/... string a marker names")
    try:
        handle = BlobHandle.parse(raw.strip())
    except BlobHandleInvalid as exc:
        raise _Refused(f"invalid handle: {exc}") from None
    offset = _int(arguments, "offset", 0, 0, None)
    length = _int(arguments, "length", DEFAULT_LENGTH, 1, MAX_LENGTH)
    return handle, offset, length


def _int(arguments: dict[str, Any], name: str, default: int, lo: int, hi: int | None) -> int:
    value = arguments.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Refused(f"{name} must be an integer, not {type(value).__name__}")
    if value < lo or (hi is not None and value > hi):
        raise _Refused(f"{name} must be between {lo} and {hi}" if hi is not None else f"{name} must be >= {lo}")
    return value


def _slice(text: str, offset: int, length: int) -> str:
    total = len(text)
    if offset >= total and total > 0:
        raise _Refused(f"offset {offset} is past the end: the result has {total} characters (offsets 0-{total - 1})")
    if offset > total:  # an empty result: only offset 0 reads it
        raise _Refused(f"offset {offset} is past the end: the result is empty")
    end = min(total, offset + length)
    return f"{header(offset, end, total)}\n{text[offset:end]}"
