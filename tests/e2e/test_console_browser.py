"""The web console in a real headless Chromium (Debian's `chromium`, driven by Playwright's Python
API; no browser is downloaded) against the whole stack: a run that needs an approval appears in the
inbox and is approved there, its timeline follows the stream live through a network cut without a
gap or a duplicate, another tenant's key sees nothing of it, a key without the approver role is
refused, and script in a task or a tool result is shown as text. It saves the screenshots the
README links (docs/screenshots/)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from agentstream.gateway.service import running_gateway
from agentstream.registry.entry import TenantPolicy
from agentstream.stack import Deployment
from agentstream.tenancy.admin import create_tenant, issue_key
from tests.harness import isolated_settings

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
# Script where a tool's result (the transfer's memo comes back in its confirmation), the call's
# arguments, the model's answer and the task put it: each must show as text and never run.
XSS = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
SCENARIOS = {
    "console-pay": {
        "turns": [
            {"text": f"Paying the rent now. {XSS}",
             "tool_calls": [{"name": "transfer_funds",
                             "arguments": {"to_account": "ACC-1", "amount_cents": 1234, "memo": XSS}}]},
            # A result larger than the timeline shows at once (and small enough to stay in the journal).
            {"tool_calls": [{"name": "sleep_ms", "arguments": {"ms": 50, "pad": 12000}}]},
            {"text": f"paid {XSS}"},
        ]
    }
}  # fmt: skip
TASK = f"[scenario:console-pay] pay the rent {XSS}"
APPROVER = ["runs:read", "runs:write", "approvals:decide"]


class Link:
    """A TCP relay between the browser and the gateway that can be cut: Chromium's offline mode
    stops new requests but leaves an open response streaming, so a dropped network (the open
    event stream dies mid-response) is made here, on a real socket."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.up = True
        self.open: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self.open |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while chunk := await src.read(65536):
                    dst.write(chunk)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self.open -= {writer, up_writer}

    def cut(self) -> None:
        self.up = False
        for writer in list(self.open):
            writer.transport.abort()  # a reset, not a clean end of the response

    def mend(self) -> None:
        self.up = True

    async def close(self) -> None:
        self.cut()
        self.server.close()
        await self.server.wait_closed()


@dataclass
class Env:
    url: str  # the console's, through the link
    api_url: str  # the gateway's own, for the test's calls (they must work while the link is cut)
    alice: str  # acme, may decide approvals
    viewer: str  # acme, may start and read runs but not decide
    outsider: str  # another tenant's key, every scope
    browser: Browser
    link: Link
    problems: list[str] = field(default_factory=list)

    def api(self, key: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)

    async def console(self, key: str, route: str = "#/runs") -> tuple[BrowserContext, Page]:
        """A fresh browser context signed in with `key`, on `route`."""
        context = await self.browser.new_context(viewport={"width": 1280, "height": 900})
        return context, await self.tab(context, key, route)

    async def tab(self, context: BrowserContext, key: str, route: str) -> Page:
        """A new tab signed in with `key` (the key lives in one tab's sessionStorage)."""
        page = await context.new_page()
        # An uncaught error in the console's code, or anything the CSP refused, fails the test.
        page.on("pageerror", lambda exc: self.problems.append(f"{route}: {exc}"))
        page.on("console", lambda m: self.problems.append(m.text) if "Content Security Policy" in m.text else None)
        await page.goto(f"{self.url}/console/")
        await page.fill("#key", key)
        await page.click("#login button[type=submit]")
        await page.wait_for_selector("#nav:not([hidden])")
        await page.goto(f"{self.url}/console/{route}")
        return page


@pytest.fixture(scope="module")
async def env(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install -y chromium` (.ci/run installs it)")
    settings, scen = await isolated_settings(kafka_bootstrap, tmp_path_factory.mktemp("console"), "cn", SCENARIOS)
    await create_tenant(settings, "acme", "Acme", rate_per_s=100, burst=200)
    await create_tenant(settings, "globex", "Globex", rate_per_s=100, burst=200)
    alice = await issue_key(settings, "acme", "alice", APPROVER)
    viewer = await issue_key(settings, "acme", "viewer", ["runs:read", "runs:write"])
    outsider = await issue_key(settings, "globex", "mallory", ["admin"])
    # A person decides (no auto-approval); alice approves the runs her own key started.
    policies = {"acme": TenantPolicy(approval_timeout_s=600, allow_self_approval=True)}
    async with (
        Deployment(settings, [scen], policies=policies) as _d,
        running_gateway(settings, port=0) as url,
        async_playwright() as pw,
    ):
        browser = await pw.chromium.launch(executable_path=CHROMIUM)
        link = Link(int(url.rsplit(":", 1)[1]))
        try:
            yield Env(f"http://127.0.0.1:{await link.start()}", url, alice, viewer, outsider, browser, link)
        finally:
            await browser.close()
            await link.close()


async def start_run(env: Env, key: str) -> str:
    async with env.api(key) as c:
        r = await c.post("/v1/runs", json={"task": TASK, "max_steps": 6}, headers={"Idempotency-Key": uuid.uuid4().hex})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def wait_status(env: Env, run_id: str, wanted: str, timeout_s: float = 90) -> None:
    async with env.api(env.alice) as c:
        for _ in range(int(timeout_s * 10)):
            if (await c.get(f"/v1/runs/{run_id}")).json()["status"] == wanted:
                return
            await asyncio.sleep(0.1)
    raise AssertionError(f"run {run_id} never became {wanted}")


async def journal_offsets(env: Env, run_id: str) -> list[int]:
    """Every event id of the run, read from its (ended) stream."""
    async with env.api(env.alice) as c, c.stream("GET", f"/v1/runs/{run_id}/events") as r:
        return [int(line[4:]) async for line in r.aiter_lines() if line.startswith("id: ")]


async def test_approve_in_the_inbox_and_follow_the_run_live_through_a_network_cut(env: Env) -> None:
    run_id = await start_run(env, env.alice)
    context, page = await env.console(env.alice)
    try:
        await page.wait_for_selector(f"#runs tr[data-run='{run_id}']")
        await page.screenshot(path=str(SHOTS / "console-runs.png"))

        await page.goto(f"{env.url}/console/#/runs/{run_id}")
        await page.wait_for_selector("#timeline li[data-type=ApprovalRequested]", timeout=60_000)
        assert await page.text_content("#stream-state") == "live"

        inbox = await env.tab(context, env.alice, "#/approvals")
        card = inbox.locator(f".approval[data-run='{run_id}']")
        await card.wait_for()
        assert "transfer_funds" in (await card.text_content() or "")
        # The run's context: what the model said when it asked (script in it shown as text).
        assert f"Paying the rent now. {XSS}" in (await card.locator(".model-words").text_content() or "")
        assert "left" in (await card.locator(".countdown").text_content() or "")  # the deadline counts down
        await inbox.screenshot(path=str(SHOTS / "console-approvals.png"))
        await card.locator("input[name=reason]").fill("rent is due")
        await card.locator("button.approve").click()
        await card.locator(".decision-done").wait_for()

        # The network drops while the run goes on: everything after the approval happens unseen.
        env.link.cut()
        await context.set_offline(True)
        await wait_status(env, run_id, "completed")
        assert await page.locator("#timeline li[data-type=RunCompleted]").count() == 0
        await context.set_offline(False)
        env.link.mend()
        await page.wait_for_selector("#timeline li[data-type=RunCompleted]", timeout=60_000)

        shown = [
            int(o) for o in await page.locator("#timeline li").evaluate_all("rows => rows.map(r => r.dataset.offset)")
        ]
        assert shown == await journal_offsets(env, run_id)  # every event once, in order: no gap, no duplicate
        assert int(await page.get_attribute("#stream-state", "data-reconnects") or 0) >= 1
        decided = await page.text_content("#timeline li[data-type=ApprovalDecided]") or ""
        assert "approved" in decided and "rent is due" in decided

        # Script in the task, the arguments, the tool's result and the answer: text, never run.
        assert await page.evaluate("window.__pwned") is None
        assert await page.locator("#view img, #view script").count() == 0
        result = page.locator("#timeline li[data-type=ToolCallCompleted]").first
        assert XSS in (await result.text_content() or "")
        assert XSS in (await page.text_content("#run-summary") or "")
        await page.evaluate("window.scrollTo(0, 0)")
        await page.screenshot(path=str(SHOTS / "console-run.png"))
        # The huge result: cut, and whole at a click.
        big = page.locator("#timeline li[data-type=ToolCallCompleted]").nth(1)
        assert len(await big.locator("pre").text_content() or "") < 5000
        await big.locator("button.show-all").click()
        await big.locator("button.show-all").wait_for(state="detached")  # fetched from the API, then shown
        assert len(await big.locator("pre").text_content() or "") >= 12000

        # Costs as charts, and the tools with their tiers and kill switches.
        await page.goto(f"{env.url}/console/#/costs")
        await page.wait_for_selector("[data-chart=by-tool] svg.bar-chart text")
        assert "transfer_funds" in (await page.text_content("[data-chart=by-tool]") or "")
        await page.goto(f"{env.url}/console/#/tools")
        tier = page.locator("#tools tr[data-tool=transfer_funds] td").nth(2)
        assert await tier.text_content() == "irreversible"
        assert env.problems == []
    finally:
        await context.close()


async def test_another_tenant_sees_nothing_and_a_viewer_cannot_approve(env: Env) -> None:
    run_id = await start_run(env, env.viewer)
    await wait_status(env, run_id, "awaiting_approval")

    context, page = await env.console(env.outsider)
    try:
        await page.wait_for_selector("#view[data-ready='/runs']")
        assert await page.locator(f"tr[data-run='{run_id}']").count() == 0
        assert await page.text_content("#runs tbody") == "No runs."
        await page.goto(f"{env.url}/console/#/runs/{run_id}")
        await page.wait_for_selector("#not-found")
        await page.goto(f"{env.url}/console/#/approvals")
        await page.wait_for_selector("#view[data-ready='/approvals']")
        assert await page.locator(".approval").count() == 0
    finally:
        await context.close()

    context, page = await env.console(env.viewer, "#/approvals")
    try:
        card = page.locator(f".approval[data-run='{run_id}']")
        await card.locator("button.approve").click()
        refusal = card.locator(".decision-error")
        await refusal.filter(has_text="403").wait_for()
        assert "approvals:decide" in (await refusal.text_content() or "")
    finally:
        await context.close()
    async with env.api(env.alice) as c:
        approval = next(a for a in (await c.get("/v1/approvals", params={"status": "pending"})).json()["data"]
                        if a["run_id"] == run_id)  # fmt: skip
        assert orjson.loads(approval["arguments_json"])["memo"] == XSS  # still pending: nothing was decided
        r = await c.post(f"/v1/approvals/{approval['id']}", json={"decision": "deny", "reason": "test over"})
        assert r.status_code == 202
    assert env.problems == []
