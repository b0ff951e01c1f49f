"""A prompt's size as the provider sees it, estimated without a tokenizer.

Characters / 4 (the routing estimate, which the scripted model counts the same way), except that a
message carrying a blob counts the blob's full size: the model invoker puts the whole text back
before the provider call, so its preview in the journal says nothing about the prompt's cost.
"""

from __future__ import annotations

import contextlib

from agentstream.blobs.errors import BlobHandleInvalid
from agentstream.blobs.handle import BlobHandle
from agentstream.llm import Message

CHARS_PER_TOKEN = 4


def message_tokens(message: Message) -> int:
    chars = len(message.content)
    if message.blob is not None:
        # An invalid handle fails the call that resolves it: what is journaled is all it can cost.
        with contextlib.suppress(BlobHandleInvalid):
            chars = BlobHandle.parse(message.blob).size
    for call in message.tool_calls:
        chars += len(call.name) + len(call.arguments_json)
    return chars // CHARS_PER_TOKEN


def prompt_tokens(messages: tuple[Message, ...]) -> int:
    return sum(message_tokens(m) for m in messages)
