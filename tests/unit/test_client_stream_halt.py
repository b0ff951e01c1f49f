"""The client's event stream at a halt: events that follow RunHalted (a late check's verdict, a
settlement) do not make it reconnect to a run that will send nothing more until it is resumed."""

from __future__ import annotations

import httpx

from agentstream.client.http import RunsClient


def _sse(*messages: tuple[int, str]) -> bytes:
    return b"".join(f'id: {i}\nevent: {t}\ndata: {{"type": "{t}"}}\n\n'.encode() for i, t in messages)


async def test_a_stream_closed_after_a_halt_and_a_trailing_event_ends_without_reconnecting() -> None:
    calls: list[str | None] = []

    def serve(request: httpx.Request) -> httpx.Response:
        calls.append(request.headers.get("Last-Event-ID"))
        if request.headers.get("Last-Event-ID"):
            return httpx.Response(200, content=b"", headers={"Content-Type": "text/event-stream"})
        body = _sse((1, "RunStarted"), (2, "RunHalted"), (3, "EvalVerdict"))
        return httpx.Response(200, content=body, headers={"Content-Type": "text/event-stream"})

    async with RunsClient("http://gw", "k", transport=httpx.MockTransport(serve), max_reconnects=1) as client:
        types = [m.type async for m in client.events("run_1")]
    assert types == ["RunStarted", "RunHalted", "EvalVerdict"]
    assert calls == [None]


async def test_a_resume_after_the_halt_means_a_closed_stream_is_reopened() -> None:
    calls: list[str | None] = []

    def serve(request: httpx.Request) -> httpx.Response:
        calls.append(request.headers.get("Last-Event-ID"))
        if request.headers.get("Last-Event-ID") == "3":
            return httpx.Response(200, content=_sse((4, "RunCompleted")), headers={"Content-Type": "text/event-stream"})
        body = _sse((1, "RunHalted"), (2, "ResumeRequested"), (3, "StepStarted"))
        return httpx.Response(200, content=body, headers={"Content-Type": "text/event-stream"})

    async with RunsClient("http://gw", "k", transport=httpx.MockTransport(serve), max_backoff_s=0.01) as client:
        types = [m.type async for m in client.events("run_1")]
    assert types == ["RunHalted", "ResumeRequested", "StepStarted", "RunCompleted"]
    assert calls == [None, "3"]
