"""Offloading large tool results from the journal into the blob store, and putting them back.

A tool result over `AGENTSTREAM_BLOB_OFFLOAD_BYTES` is put in the blob store (tenant of the run,
scope = the run id, kind `tool_result`) by the tool executor's adapter. Its ToolCallCompleted then
carries the handle (`result_blob`) and, as its `content`, a preview plus a marker naming the
handle, so the journal record stays small. The orchestrator copies both into the next prompt's
tool message (`Message.blob`), purely. Right before the provider call, the model invoker's adapter
replaces each such message's content with the blob's full text.

Only the structured `blob` field is ever resolved, never a marker found in text: a tool that
returns a forged marker (naming another tenant's or another run's blob) gets it passed on as the
plain text it is. The marker is for people and for the model (it says the text was cut).
"""

from __future__ import annotations

import dataclasses
import re

from agentstream.blobs.errors import BlobCorrupted, BlobHandleInvalid
from agentstream.blobs.handle import BlobHandle
from agentstream.blobs.store import BlobStore
from agentstream.llm import Message

KIND = "tool_result"
# What the journal keeps of an offloaded result: its first characters (at most 4 KiB in UTF-8).
PREVIEW_CHARS = 1024
_MARKER = re.compile(r"\n\[offloaded (?P<size>0|[1-9][0-9]{0,14}) bytes: (?P<handle>blob:v1/[^\s\]]{1,400})\]\Z")


def over_threshold(content: str, threshold: int) -> bool:
    """Whether a result is larger than `threshold` UTF-8 bytes (`0`: offload is off). A result of
    at most a quarter of the threshold in characters is decided by its length alone (a character
    is at most 4 bytes), so the common small result costs one comparison."""
    if threshold <= 0 or len(content) <= threshold // 4:
        return False
    if len(content) > threshold:  # at least one byte per character
        return True
    return len(encoded(content)) > threshold


def encoded(content: str) -> bytes:
    # surrogatepass: a lone surrogate a tool decoded from bad bytes survives the round trip.
    return content.encode("utf-8", "surrogatepass")


def marker(handle: BlobHandle) -> str:
    return f"\n[offloaded {handle.size} bytes: {handle}]"


def preview_with_marker(content: str, handle: BlobHandle) -> str:
    """What the journal keeps in place of an offloaded result."""
    return content[:PREVIEW_CHARS] + marker(handle)


def parse_marker(text: str) -> BlobHandle | None:
    """The handle named by the marker that ends `text`, or None. For display (`runs show`): the
    invoker resolves the structured field only."""
    match = _MARKER.search(text[-600:])
    if match is None:
        return None
    try:
        handle = BlobHandle.parse(match["handle"])
    except BlobHandleInvalid:
        return None
    return handle if handle.size == int(match["size"]) else None


# How orjson writes a message's `blob` key. Text that merely contains these characters is escaped
# in the JSON (`\"blob\":\"`), so a prompt without offloads is recognized by one substring search.
BLOB_KEY = '"blob":"'
_BLOB_FIELD = re.compile(r'"blob":"(blob:v1/[^"]{1,400})"')


def offloaded_bytes(messages_json: str) -> int:
    """The bytes the blobs named by a journaled prompt's messages add when the invoker resolves
    them (the sizes their handles state): what a budget must count beyond the journaled text."""
    if BLOB_KEY not in messages_json:
        return 0
    total = 0
    for match in _BLOB_FIELD.finditer(messages_json):
        try:
            total += BlobHandle.parse(match[1]).size
        except BlobHandleInvalid:
            continue  # resolving it fails the call: nothing to reserve for
    return total


async def offload(store: BlobStore, tenant_id: str, run_id: str, content: str, kind: str = KIND) -> tuple[str, str]:
    """Puts a text in the store: (the preview with its marker, the handle string)."""
    handle = await store.put(tenant_id, encoded(content), scope=run_id, kind=kind)
    return preview_with_marker(content, handle), str(handle)


async def resolve_messages(store: BlobStore, tenant_id: str, messages: tuple[Message, ...]) -> tuple[Message, ...]:
    """The messages with each offloaded one's full text put back, read as `tenant_id` (a handle
    of another tenant is `BlobAccessDenied`). A missing or corrupted blob raises its `BlobError`:
    never an empty or partial text."""
    resolved: list[Message] = []
    for message in messages:
        if message.blob is None:
            resolved.append(message)
            continue
        text = await read_text(store, tenant_id, BlobHandle.parse(message.blob))
        resolved.append(dataclasses.replace(message, content=text, blob=None))
    return tuple(resolved)


async def read_text(store: BlobStore, tenant_id: str, handle: BlobHandle) -> str:
    """An offloaded text read back as `tenant_id`, decoded as `encoded` wrote it; `BlobCorrupted`
    when it is not UTF-8 (and the store's own `BlobError` for anything else)."""
    data = await store.get(tenant_id, handle)
    try:
        return data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        raise BlobCorrupted(f"blob {handle.key} is not UTF-8 text, as a tool result must be") from None
