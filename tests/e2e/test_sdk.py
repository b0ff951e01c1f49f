"""The HTTP client SDK against the real gateway, broker and processors, including an SSE stream
through a proxy that keeps cutting the connection, and the CLI's run-API path."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from agentstream.cli import commands
from agentstream.cli.main import parser
from agentstream.client import (
    Conflict,
    NotFound,
    RateLimited,
    Run,
    RunEventMessage,
    RunsClient,
    RunStatus,
)
from agentstream.client.journal import JournalClient, RunRequest
from agentstream.config import Settings
from agentstream.events import EVENT_TYPES, RunCompleted
from agentstream.gateway.service import running_gateway
from agentstream.stack import PAYMENTS_AUTO_APPROVED, Deployment
from agentstream.tenancy.admin import create_tenant, issue_key
from tests.harness import isolated_settings

SCENARIOS: dict[str, dict[str, Any]] = {
    "steps": {"turns": [
        *[{"delay_ms": 100, "tool_calls": [{"name": "calculator", "arguments": {"expression": f"{i} + 1"}}]} for i in range(6)],
        {"text": "six steps done"},
    ]},
    "slow": {"turns": [
        {"delay_ms": 3000, "tool_calls": [{"name": "calculator", "arguments": {"expression": "1 + 1"}}]},
        {"text": "done"},
    ]},
}  # fmt: skip
TERMINAL = ("completed", "failed", "cancelled")


@dataclass
class Sdk:
    url: str
    key_a: str
    key_b: str
    key_tiny: str
    deployment: Deployment


@pytest.fixture(scope="module")
async def sdk(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sdk]:
    settings, scen = await isolated_settings(kafka_bootstrap, tmp_path_factory.mktemp("sdk"), "sdk", SCENARIOS)
    await create_tenant(settings, "acme", "Acme", rate_per_s=200, burst=400, max_active_runs=100)
    await create_tenant(settings, "globex", "Globex", rate_per_s=200, burst=400, max_active_runs=100)
    await create_tenant(settings, "tiny", "Tiny", rate_per_s=0.01, burst=1, max_active_runs=1)
    keys = [await issue_key(settings, t, "test") for t in ("acme", "globex", "tiny")]
    async with (
        Deployment(settings, [scen], policies=dict.fromkeys(("acme", "globex", "tiny"), PAYMENTS_AUTO_APPROVED)) as d,
        running_gateway(settings, port=0) as url,
    ):
        yield Sdk(url, keys[0], keys[1], keys[2], d)


async def wait_until_ended(client: RunsClient, run_id: str, timeout_s: float = 30) -> Run:
    for _ in range(int(timeout_s * 10)):
        run = await client.get(run_id)
        if run.status.terminal:
            return run
        await asyncio.sleep(0.1)
    raise AssertionError(f"{run_id} did not end")


async def test_create_wait_and_get(sdk: Sdk) -> None:
    async with RunsClient(sdk.url, sdk.key_a) as c:
        run = await c.create("[scenario:demo] pay", max_steps=10, labels={"team": "sdk"}, wait_s=30)
        assert run.status == "completed" and run.final_answer and run.labels == {"team": "sdk"}
        assert run.id.startswith("run_") and run.created_at_ms <= run.updated_at_ms
        again = await c.get(run.id)
        # The last call is settled by the cost governor just after the run ends: its cost may
        # arrive between the two reads, and only grows.
        assert again.cost_usd >= run.cost_usd > 0
        assert again.model_copy(update={"cost_usd": run.cost_usd}) == run
        key = uuid.uuid4().hex
        first = await c.create("[scenario:demo] once", idempotency_key=key, max_steps=10)
        assert (await c.create("[scenario:demo] once", idempotency_key=key, max_steps=10)).id == first.id
        with pytest.raises(Conflict) as conflict:
            await c.create("[scenario:demo] other", idempotency_key=key, max_steps=10)
        assert conflict.value.field == "Idempotency-Key"


async def test_list_follows_cursors(sdk: Sdk) -> None:
    async with RunsClient(sdk.url, sdk.key_b) as c:
        made = [(await c.create(f"[scenario:demo] p{i}", max_steps=10, wait_s=30)).id for i in range(5)]
        page = await c.list_page(status=RunStatus.COMPLETED, limit=2)
        assert len(page.data) == 2 and page.next_cursor is not None
        seen = [run.id async for run in c.list(status="completed", limit=2)]
        assert set(made) <= set(seen) and len(seen) == len(set(seen))
        assert all(run.status == "completed" for run in [r async for r in c.list(status="completed", limit=3)])


async def test_cancel_then_conflicts(sdk: Sdk) -> None:
    async with RunsClient(sdk.url, sdk.key_a) as c:
        run = await c.create("[scenario:slow] go", max_steps=10)
        accepted = await c.cancel(run.id, reason="no longer needed")
        assert accepted.id == run.id
        ended = await wait_until_ended(c, run.id)
        assert ended.status == "cancelled" and ended.reason == "no longer needed"
        with pytest.raises(Conflict) as again:
            await c.cancel(run.id)
        assert again.value.status == 409 and again.value.type == "already_ended"
        with pytest.raises(Conflict) as resume:
            await c.resume(run.id)
        assert resume.value.type == "not_resumable"


async def test_other_tenants_run_is_not_found(sdk: Sdk) -> None:
    async with RunsClient(sdk.url, sdk.key_a) as a, RunsClient(sdk.url, sdk.key_b) as b:
        run = await a.create("[scenario:demo] secret", max_steps=10)
        with pytest.raises(NotFound):
            await b.get(run.id)
        with pytest.raises(NotFound):
            await b.cancel(run.id)
        with pytest.raises(NotFound):
            _ = [m async for m in b.events(run.id)]


async def test_rate_limited_carries_retry_after(sdk: Sdk) -> None:
    async with RunsClient(sdk.url, sdk.key_tiny) as c:
        with pytest.raises(RateLimited) as limited:
            for _ in range(3):  # a burst of one: the second call at the latest is refused
                await c.list_page()
    assert limited.value.status == 429 and limited.value.type == "rate_limited"
    assert limited.value.retry_after is not None and limited.value.retry_after >= 1


async def test_events_are_the_whole_run_typed_and_in_order(sdk: Sdk) -> None:
    async with RunsClient(sdk.url, sdk.key_a) as c:
        run = await c.create("[scenario:steps] go", max_steps=10)
        messages = [m async for m in c.events(run.id)]  # starts while the run is live
    assert messages[0].type == "RunRequested" and messages[-1].type == "RunCompleted"
    assert [m.id for m in messages] == sorted({m.id for m in messages})
    for m in messages:
        assert type(m.event) is EVENT_TYPES[m.type] and m.data["offset"] == m.id
    last = messages[-1].event
    assert isinstance(last, RunCompleted) and last.final_answer == "six steps done"
    journal = await sdk.deployment.client.read_run(run.id)
    assert [m.id for m in messages] == [e.offset for e in journal][: len(messages)]


class CuttingProxy:
    """A TCP proxy to the gateway that closes each connection after `cut_after` response bytes."""

    def __init__(self, upstream_port: int, cut_after: int) -> None:
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.connections = 0
        self.cuts = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def to_gateway() -> None:
            with contextlib.suppress(ConnectionError):
                while data := await reader.read(65536):
                    up_writer.write(data)
                    await up_writer.drain()

        forward = asyncio.create_task(to_gateway())
        sent = 0
        try:
            while sent < self.cut_after:
                data = await up_reader.read(65536)
                if not data:
                    break
                data = data[: self.cut_after - sent]  # cut exactly here, often mid-event
                writer.write(data)
                await writer.drain()
                sent += len(data)
            self.cuts += sent >= self.cut_after
        except ConnectionError:
            pass
        finally:
            forward.cancel()
            for w in (writer, up_writer):
                w.close()

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.close()


async def test_events_resume_through_a_connection_that_keeps_dropping(sdk: Sdk) -> None:
    # The largest event of this run (its last LlmCallRequested, with the whole conversation) is
    # ~4.7 KB and the whole stream ~45 KB: 6000 bytes per connection cuts it many times, mid-event,
    # while every connection still delivers at least one whole event.
    proxy = CuttingProxy(int(sdk.url.rsplit(":", 1)[1]), cut_after=6000)
    async with RunsClient(sdk.url, sdk.key_a) as direct, proxy.serving() as proxied_url:
        run = await direct.create("[scenario:steps] cut", max_steps=10)
        async with RunsClient(proxied_url, sdk.key_a) as through_proxy:
            received: list[RunEventMessage] = [m async for m in through_proxy.events(run.id)]
        full = [m async for m in direct.events(run.id)]
    assert proxy.cuts >= 2 and proxy.connections > proxy.cuts, "the stream was cut and resumed more than once"
    ids = [m.id for m in received]
    assert ids == [m.id for m in full], "every event exactly once, in order, with no gap"
    assert received == full and received[-1].type == "RunCompleted"
    # resuming from an id given by the caller yields only what follows it
    async with RunsClient(sdk.url, sdk.key_a) as c:
        tail = [m async for m in c.events(run.id, last_event_id=str(full[2].id))]
    assert [m.id for m in tail] == ids[3:]


async def test_cli_uses_the_run_api_when_a_key_is_set(
    sdk: Sdk, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AGENTSTREAM_API_KEY", sdk.key_a)
    monkeypatch.setenv("AGENTSTREAM_API_URL", sdk.url)
    code = await commands.dispatch(parser().parse_args(["run", "[scenario:steps] via cli", "--follow"]))
    out = capsys.readouterr().out
    assert code == 0, out
    run_id = out.splitlines()[0]
    assert run_id.startswith("run_")
    assert "requested  task='[scenario:steps] via cli'" in out and "✓ calculator" in out
    assert "completed  after" in out and "\nsummary" in out
    assert await commands.dispatch(parser().parse_args(["runs", "show", run_id])) == 0
    assert "completed  after" in capsys.readouterr().out
    assert await commands.dispatch(parser().parse_args(["runs", "show", run_id, "--json"])) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["run"]["id"] == run_id and shown["events"][-1]["type"] == "RunCompleted"
    assert await commands.dispatch(parser().parse_args(["runs", "cancel", run_id])) == 1  # it already ended
    assert "already_ended" in capsys.readouterr().err


async def test_a_journal_client_opens_one_producer_under_concurrent_first_use(settings: Settings) -> None:
    """The Kafka-level helper: twenty concurrent first requests share one producer (each had its
    own before, and all but one leaked, reconnecting forever after the broker went away)."""

    def producer_threads() -> int:
        return sum(1 for t in threading.enumerate() if t.name == "kafka-producer-poll")

    before = producer_threads()
    client = JournalClient(settings)
    try:
        run_ids = await asyncio.gather(*(client.request_run(RunRequest(task=f"t{i}")) for i in range(20)))
        assert len(set(run_ids)) == 20
        assert producer_threads() == before + 1
        assert len(await client.read_run(run_ids[0])) == 1  # the request reached the journal
    finally:
        await client.aclose()
