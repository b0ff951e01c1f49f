"""The scripted model server's own HTTP/1.1 layer, spoken to byte for byte over a real socket:
keep-alive, pipelining (delayed replies keep their order), chunked request bodies,
`Expect: 100-continue`, streamed replies, unknown routes and malformed requests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httptools
import orjson
import pytest

from agentstream.doubles.scripted_model import ScriptedModelServer, running_scripted_model

SCENARIOS = [{"name": "slow", "turns": [{"text": "late", "delay_ms": 150}]}]


class Parsed:
    """Responses read off a socket with httptools, one per message."""

    def __init__(self) -> None:
        self.done: list[tuple[int, dict[str, str], bytes]] = []
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.done.append((self.parser.get_status_code(), self._headers, b"".join(self._body)))
        self._headers, self._body = {}, []


async def responses(reader: asyncio.StreamReader, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    parsed = Parsed()
    while len(parsed.done) < count:
        data = await asyncio.wait_for(reader.read(65536), 5)
        if not data:
            break
        parsed.parser.feed_data(data)
    return parsed.done


def post(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n%s\r\n%s" % (path.encode(), len(body), extra, body)


def chat(text: str, key: str, stream: bool = False) -> bytes:
    body = {"model": "m", "messages": [{"role": "user", "content": text}], "stream": stream}
    return post("/v1/chat/completions", orjson.dumps(body), b"idempotency-key: %s\r\n" % key.encode())


@pytest.fixture
async def conn() -> AsyncIterator[tuple[ScriptedModelServer, asyncio.StreamReader, asyncio.StreamWriter]]:
    server = ScriptedModelServer(scenarios=SCENARIOS)
    async with running_scripted_model(server=server) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        yield server, reader, writer
        writer.close()


async def test_pipelined_requests_are_answered_in_order_even_when_one_is_delayed(
    conn: tuple[ScriptedModelServer, asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    server, reader, writer = conn
    writer.write(chat("[scenario:slow] first", "k1") + chat("hi", "k2") + chat("hi", "k3", stream=True))
    got = await responses(reader, 3)
    assert [status for status, _, _ in got] == [200, 200, 200]
    assert orjson.loads(got[0][2])["choices"][0]["message"]["content"] == "late"
    assert orjson.loads(got[1][2])["choices"][0]["message"]["tool_calls"]
    assert got[2][1]["transfer-encoding"] == "chunked" and got[2][1]["content-type"] == "text/event-stream"
    assert got[2][2].endswith(b"data: [DONE]\n\n")
    assert all(h["server"].startswith("agentstream-scripted-model (fake)") for _, h, _ in got)
    assert server.stats()["total_requests"] == 3


async def test_chunked_request_bodies_and_expect_continue(
    conn: tuple[ScriptedModelServer, asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    _, reader, writer = conn
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    half = len(body) // 2
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nexpect: 100-continue\r\n\r\n"
    )
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    writer.write(b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, body[:half], len(body) - half, body[half:]))
    (status, _, reply), = await responses(reader, 1)  # fmt: skip
    assert status == 200 and orjson.loads(reply)["choices"][0]["message"]["tool_calls"]


async def test_routes_methods_and_malformed_requests(
    conn: tuple[ScriptedModelServer, asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    server, reader, writer = conn
    writer.write(b"GET /v1/chat/completions HTTP/1.1\r\nhost: x\r\n\r\n" + post("/nowhere", b"{}"))
    writer.write(b"GET /_scripted/stats?x=1 HTTP/1.1\r\nhost: x\r\n\r\n")
    (s405, _, _), (s404, _, body404), (s200, _, stats) = await responses(reader, 3)
    assert (s405, s404, s200) == (405, 404, 200)
    assert b"scripted model server, a fake" in body404 and orjson.loads(stats)["total_requests"] == 0
    writer.write(b"this is not HTTP\r\n\r\n")
    (status, headers, _), = await responses(reader, 1)  # fmt: skip
    assert status == 400 and headers["connection"] == "close"
    assert await asyncio.wait_for(reader.read(), 5) == b""  # and the connection is closed
    assert server.stats()["total_requests"] == 0


async def test_connection_close_is_honoured(
    conn: tuple[ScriptedModelServer, asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    _, reader, writer = conn
    writer.write(b"GET /_scripted/scenarios HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    (status, headers, body), = await responses(reader, 1)  # fmt: skip
    assert status == 200 and "slow" in orjson.loads(body)["scenarios"] and headers["connection"] == "close"
    assert await asyncio.wait_for(reader.read(), 5) == b""
