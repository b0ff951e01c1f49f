"""The key `agentstream dev` prints for the console, against the real broker: issued once to the
`default` tenant with the approver's scopes, kept owner-only in the home folder, printed again on
the next start, and replaced when it was revoked."""

from __future__ import annotations

import stat

from agentstream.config import Settings
from agentstream.console.devkey import SCOPES, TENANT, console_banner, console_key, key_file
from agentstream.tenancy.admin import list_keys, revoke_key
from agentstream.tenancy.keys import parse_key


async def test_dev_prints_one_console_key_until_it_is_revoked(settings: Settings) -> None:
    first = await console_key(settings)
    key_id = parse_key(first)
    assert key_id is not None
    issued = {k.key_id: k for k in await list_keys(settings, TENANT)}
    assert issued[key_id].scopes == SCOPES and not issued[key_id].revoked
    assert stat.S_IMODE(key_file(settings).stat().st_mode) == 0o600

    assert await console_key(settings) == first  # a restarted dev: the same key, no new one
    assert len(await list_keys(settings, TENANT)) == 1

    await revoke_key(settings, key_id)
    second = await console_key(settings)
    assert second != first and key_file(settings).read_text().strip() == second
    assert console_banner("http://127.0.0.1:8080", second) == (
        f"console: http://127.0.0.1:8080/console/ (paste this key when it asks: {second})"
    )
