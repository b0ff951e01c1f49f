"""The key `agentstream dev` prints for opening the console: one per home, kept across restarts.

Issued to the `default` tenant (the one local runs and the CLI use) with the scopes a person at a
development console needs, deciding approvals included. The plaintext is kept in the home folder
(readable by its owner only), as the broker's and the platform's own credentials are: a restarted
`dev` prints the same key instead of piling up new ones, and issues a new one if it was revoked."""

from __future__ import annotations

import os
from pathlib import Path

from agentstream.config import Settings
from agentstream.tenancy.admin import create_tenant, issue_key, list_keys, list_tenants
from agentstream.tenancy.keys import parse_key
from agentstream.tenancy.scopes import APPROVALS_DECIDE, RUNS_READ, RUNS_WRITE, TOOLS_WRITE

TENANT = "default"
SCOPES = (RUNS_READ, RUNS_WRITE, APPROVALS_DECIDE, TOOLS_WRITE)
LABEL = "console (agentstream dev)"


def key_file(settings: Settings) -> Path:
    return settings.home / "console.key"


async def console_key(settings: Settings) -> str:
    """The development console's key: the kept one while it is still active, else a new one."""
    path = key_file(settings)
    kept = path.read_text().strip() if path.exists() else ""
    key_id = parse_key(kept)
    if all(t.tenant_id != TENANT for t in await list_tenants(settings)):
        # A console polls a few reads a second (the default rate, 5/s, would refuse some), and the
        # CLI's local runs count toward the tenant's active runs as the API's do.
        await create_tenant(settings, TENANT, "Default (local development)", rate_per_s=50, burst=200,
                            max_active_runs=1000)  # fmt: skip
    elif key_id is not None and any(k.key_id == key_id and not k.revoked for k in await list_keys(settings, TENANT)):
        return kept
    plaintext = await issue_key(settings, TENANT, LABEL, SCOPES)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written owner-only from the start: the key must not be readable even for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(plaintext + "\n")
    return plaintext


def console_banner(url: str, key: str) -> str:
    return f"console: {url}/console/ (paste this key when it asks: {key})"
