"""The edges a new user meets first (issue 15) that are answered without a broker: an unknown tool
or a malformed tool URL refused at the gateway's door (the real app over httpx.ASGITransport, its
tenant directory and registry fed directly), a dev broker's own ports and data, and the test
`Deployment`'s auto-approval. The ones that need the whole stack are in tests/e2e/test_door_edges.py."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agentstream.client.journal import JournalClient
from agentstream.config import ModelSettings, Settings
from agentstream.events import ApiKeyIssued, TenantUpserted
from agentstream.gateway.app import Gateway
from agentstream.gateway.projection import RunIndex
from agentstream.gateway.service import KeyAuthenticator, TenantRates
from agentstream.gateway.tools_api import ToolsApi
from agentstream.registry.catalog import ToolCatalog
from agentstream.registry.entry import ToolEntry
from agentstream.registry.reader import CatalogReader
from agentstream.stack import AUTO_APPROVE_DEMO, PAYMENTS_AUTO_APPROVED, Deployment, local_broker_at
from agentstream.tenancy.directory import TenantDirectory, key_record_key, tenant_record_key
from agentstream.tenancy.keys import generate_key, hash_secret

# -- 1. an unknown tool is refused at the door (in-process, no broker) ----------------------------


def tool_entry(name: str, owner: str = "") -> ToolEntry:
    transport = {"kind": "stdio", "server": "s", "command": sys.executable, "args": ["-c", "pass"]}
    return ToolEntry(name=name, description="", input_schema={"type": "object"}, tier="read_only",
                     transport=transport, owner=owner, version="1")  # fmt: skip


@pytest.fixture
def door(tmp_path: Path) -> Iterator[tuple[httpx.AsyncClient, str]]:
    """The gateway's Starlette app over ASGITransport, its tenant directory and tool registry fed
    directly (no broker): tenant acme with one key, two platform tools, one tool of acme's own
    and one of another tenant's."""
    settings = Settings("127.0.0.1:9", "door", tmp_path, ModelSettings())
    directory = TenantDirectory(settings)
    key_id, plaintext = generate_key()
    directory._on_event(TenantUpserted(tenant_record_key("acme"), "acme", "Acme", 100.0, 100, 10, False))
    directory._on_event(ApiKeyIssued(key_record_key(key_id), key_id, "acme", hash_secret(plaintext), "t", 0, []))
    catalog = ToolCatalog()
    for entry in (
        tool_entry("calculator"),
        tool_entry("lookup"),
        tool_entry("acme_crm", "acme"),
        tool_entry("globex_ledger", "globex"),
    ):
        catalog.apply(entry.to_event())
    tools = ToolsApi(settings, CatalogReader(settings, catalog), follows_topics=False)
    gateway = Gateway(RunIndex(settings), JournalClient(settings), KeyAuthenticator(directory),
                      TenantRates(directory), tools=tools)  # fmt: skip
    transport = httpx.ASGITransport(app=gateway.app())
    yield httpx.AsyncClient(transport=transport, base_url="http://gw"), plaintext


async def test_an_unknown_tool_is_refused_with_the_names_and_the_tools_the_tenant_has(
    door: tuple[httpx.AsyncClient, str],
) -> None:
    http, key = door
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "k1"}
    body = {"task": "add", "tools": ["calculater", "calculator", "globex_ledger"]}
    async with http:
        response = await http.post("/v1/runs", json=body, headers=headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "unknown_tool" and error["field"] == "tools"
    # Another tenant's tool is as unknown as a typo, and what the tenant may use is listed.
    assert error["unknown"] == ["calculater", "globex_ledger"]
    assert error["available"] == ["acme_crm", "calculator", "lookup"]
    assert "calculater" in error["message"] and "calculator" in error["message"]


async def test_a_remote_tool_url_that_is_no_url_is_refused_not_a_server_error(
    door: tuple[httpx.AsyncClient, str],
) -> None:
    http, key = door
    body = {"name": "remote", "description": "d", "input_schema": {"type": "object"}, "tier": "read_only",
            "url": "https://example.com/m\x0fcp", "egress": ["example.com"]}  # fmt: skip
    async with http:
        response = await http.post("/v1/tools", json=body, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 422, response.text
    assert "url" in response.json()["error"]["message"]  # the documented pattern refuses it, or the URL check


def test_a_kafka_port_gives_the_local_broker_its_ports_and_its_own_data(tmp_path: Path) -> None:
    settings = Settings("127.0.0.1:19092", "agentstream", tmp_path, ModelSettings())
    a, b = local_broker_at(settings, 29092), local_broker_at(settings, 39092)
    assert (a.bootstrap, a.controller_port, a.data_dir) == ("127.0.0.1:29092", 29093, tmp_path / "kafka-29092")
    assert b.data_dir != a.data_dir and {b.port, b.controller_port}.isdisjoint({a.port, a.controller_port})


# -- 3. the test Deployment auto-approves only when asked -----------------------------------------


def test_a_deployment_auto_approves_nothing_unless_asked(tmp_path: Path) -> None:
    settings = Settings("127.0.0.1:9", "dep", tmp_path, ModelSettings())
    assert Deployment(settings).policies == {}
    assert Deployment(settings, policies=AUTO_APPROVE_DEMO).policies == {"default": PAYMENTS_AUTO_APPROVED}
    with contextlib.suppress(TypeError):  # the constant cannot be changed by one caller for all
        AUTO_APPROVE_DEMO["default"] = PAYMENTS_AUTO_APPROVED  # type: ignore[index]
        raise AssertionError("AUTO_APPROVE_DEMO is mutable")
