"""The one SSE parser (agentstream.sse): messages split anywhere across reads, line endings, comments,
and what happens to a message the stream cut off."""

from __future__ import annotations

from collections.abc import AsyncIterator

from agentstream.sse import SseDecoder, SseMessage, parse_sse, parse_sse_bytes

STREAM = (
    b": keep-alive\r\n\r\n"
    b'id: 7\r\nevent: RunStarted\r\ndata: {"a":\r\ndata: 1}\r\n\r\n'
    b"retry: 100\nid:8\nevent:RunCompleted\ndata:{}\n\n"
    b"data: no id\rdata: cr only\r\r"
)
EXPECTED = [
    SseMessage('{"a":\n1}', "RunStarted", "7"),
    SseMessage("{}", "RunCompleted", "8"),
    SseMessage("no id\ncr only"),
]


def test_a_whole_body() -> None:
    assert parse_sse_bytes(STREAM) == EXPECTED


def test_every_split_of_the_stream_gives_the_same_messages() -> None:
    for cut in range(1, len(STREAM)):
        decoder = SseDecoder()
        got = decoder.feed(STREAM[:cut]) + decoder.feed(STREAM[cut:]) + decoder.close()
        assert got == EXPECTED, cut
    decoder = SseDecoder()
    one_byte_at_a_time = [m for i in range(len(STREAM)) for m in decoder.feed(STREAM[i : i + 1])]
    assert one_byte_at_a_time + decoder.close() == EXPECTED


def test_a_message_cut_off_is_dropped_unless_kept() -> None:
    cut = b"id: 1\ndata: whole\n\nid: 2\ndata: half"
    assert parse_sse_bytes(cut) == [SseMessage("whole", None, "1")]
    decoder = SseDecoder()
    assert decoder.feed(cut) + decoder.close(keep_unterminated=True) == [
        SseMessage("whole", None, "1"),
        SseMessage("half", None, "2"),
    ]
    assert parse_sse_bytes(b"event: only\n\n: comment\n\n") == []  # no data line: no message


async def test_an_async_byte_stream() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(STREAM), 5):
            yield STREAM[i : i + 5]

    assert [m async for m in parse_sse(chunks())] == EXPECTED
    utf8 = "data: é€\n\n".encode()
    decoder = SseDecoder()
    assert decoder.feed(utf8[:7]) + decoder.feed(utf8[7:]) == [SseMessage("é€")]
