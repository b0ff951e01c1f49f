"""The console's static files as the gateway serves them: the shipped files only, each with the
headers that keep the page inert (a CSP with no inline script), and no script that parses data
as markup."""

from __future__ import annotations

import re

import httpx
import pytest
from starlette.applications import Starlette

from agentstream.console.serve import CSP, FILES, console_routes


def client() -> httpx.AsyncClient:
    app = Starlette(routes=console_routes())
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console.test")


async def test_the_page_and_its_modules_are_served_with_a_strict_policy() -> None:
    async with client() as c:
        page = await c.get("/console/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"] == CSP
        assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP and "unsafe-eval" not in CSP
        assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
        # Every script the page loads is a file of ours: no inline script at all.
        assert re.findall(r"<script[^>]*>", page.text) == ['<script type="module" src="app.js">']
        module = await c.get("/console/views/run.js")
        assert module.status_code == 200 and module.headers["content-type"].startswith("text/javascript")
        assert module.headers["content-security-policy"] == CSP
        moved = await c.get("/console", follow_redirects=False)
        assert moved.status_code == 308 and moved.headers["location"] == "/console/"


@pytest.mark.parametrize("path", ["/console/nothing.js", "/console/../serve.py", "/console/%2e%2e/serve.py",
                                  "/console/views/../../serve.py", "/console/__init__.py"])  # fmt: skip
async def test_nothing_but_the_shipped_files_is_served(path: str) -> None:
    async with client() as c:
        r = await c.get(path)
    # (A path that leaves /console is no route of the console's at all: the gateway's 404.)
    assert r.status_code == 404


def test_no_script_turns_data_into_markup() -> None:
    """The views build every node with dom.h (text nodes for data); these sinks would parse a
    tool's or a model's text as HTML or code."""
    sinks = re.compile(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|setTimeout\(\s*[\"'`]"
    )
    scripts = {name: body.decode() for name, (body, _) in FILES.items() if name.endswith(".js")}
    assert {"app.js", "api.js", "dom.js", "views/run.js", "views/timeline.js", "views/approvals.js"} <= set(scripts)
    assert {name: sinks.findall(text) for name, text in scripts.items() if sinks.search(text)} == {}
