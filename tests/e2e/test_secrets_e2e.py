"""A tenant secret's whole path in a real run: sealed on its topic, released by a delegation the
policy gate issued for one call, redeemed by the executor at execution time, received by the MCP
tool (in the sandbox), and scrubbed from the tool's answer. Then every topic of the deployment and
every processor log is scanned for the secret in plain, base64 and hex form: none may hold it."""

from __future__ import annotations

import asyncio
import base64
import secrets
import sys
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from agentstream.client.journal import RunRequest
from agentstream.credentials.keys import local_key_provider
from agentstream.credentials.store import put_secret
from agentstream.events import RunCompleted, ToolCallAuthorized, ToolCallCompleted
from agentstream.kafka.journal import header_pairs
from agentstream.registry.admin import register_tool
from agentstream.registry.entry import TenantPolicy, ToolEntry
from agentstream.stack import Deployment
from agentstream.tenancy.admin import create_tenant
from tests.harness import isolated_settings
from tests.kafkahelpers import read_topic

SERVER = Path(__file__).parents[1] / "fixtures" / "credential_server.py"
LOOKUP = {"tool_calls": [{"name": "crm_lookup", "arguments": {"customer": "ACME"}}]}
SCENARIOS: dict[str, dict[str, Any]] = {"crm": {"turns": [LOOKUP, {"text": "ACME is active"}]}}


def forms(secret: str) -> list[bytes]:
    raw = secret.encode()
    return [raw, base64.b64encode(raw), base64.urlsafe_b64encode(raw), raw.hex().encode()]


async def test_a_secret_reaches_only_its_tool_and_no_topic_or_log(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    home = tmp_path_factory.mktemp("secrets-e2e")
    settings, scen = await isolated_settings(kafka_bootstrap, home, "se", SCENARIOS)
    secret = "crm-" + secrets.token_urlsafe(24)
    received = home / "received-token"

    async def receive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.write_bytes(await reader.read())
        writer.close()

    # The sandboxed tool writes no host file; it reports through a socket it is given (and may
    # connect to, running as another uid).
    probe = await asyncio.start_unix_server(receive, home / "probe.sock")
    (home / "probe.sock").chmod(0o777)
    await create_tenant(settings, "acme", "Acme")
    await put_secret(settings, local_key_provider(settings), "acme", "crm_token", secret, ["crm_lookup"], ["crm:read"])
    transport = {"kind": "stdio", "server": "crm", "command": sys.executable,
                 "args": [str(SERVER), str(home / "probe.sock")]}  # fmt: skip
    schema = {"type": "object", "properties": {"customer": {"type": "string"}}, "required": ["customer"]}
    entry = ToolEntry(name="crm_lookup", description="CRM lookup", input_schema=schema, tier="read_only",
                      transport=transport, scopes=("crm:read",), secrets=("crm_token",))  # fmt: skip
    await register_tool(settings, entry)

    async with Deployment(settings, [scen], policies={"acme": TenantPolicy()}) as d:
        run_id = await d.client.request_run(
            RunRequest(task="[scenario:crm] is ACME active?", tools=["crm_lookup"], tenant_id="acme")
        )
        events = [e.event async for e in d.client.follow(run_id, timeout_s=90)]
    probe.close()

    assert isinstance(events[-1], RunCompleted), events[-1]
    assert received.read_text() == secret  # the tool got the secret, at execution time
    authorized = next(e for e in events if isinstance(e, ToolCallAuthorized))
    assert authorized.delegation  # a delegation, never the secret, travels in the journal
    answer = next(e for e in events if isinstance(e, ToolCallCompleted))
    assert not answer.is_error and "[REDACTED]" in answer.content

    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers, **settings.kafka_extra})
    topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(f"{settings.topic_prefix}.")]
    assert len(topics) >= 8
    for topic in topics:
        for msg in await read_topic(settings.bootstrap_servers, topic, min_count=0, timeout_s=5):
            raw = b"".join([msg.key() or b"", msg.value() or b"", *(v for _, v in header_pairs(msg))])
            assert not any(form in raw for form in forms(secret)), topic
    logs = list((settings.home / "logs").rglob("*.log"))
    assert logs
    for log in logs:
        text = log.read_bytes()
        assert not any(form in text for form in forms(secret)), log
