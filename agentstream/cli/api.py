"""Commands that go through the run API when the user has an API key, one way for all of them:
`AGENTSTREAM_API_KEY` (and `AGENTSTREAM_API_URL`, default the local gateway) set means the API,
acting as that key's tenant; unset means the operator's direct path (the journal)."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable

from agentstream.client.http import ApiError, NotFound, RunsClient
from agentstream.settings import CliSettings, load


def api_configured() -> bool:
    # Read per command, not once per process: a test runs many commands with different keys.
    return load(CliSettings).api_key is not None


async def via_api(
    command: Callable[[RunsClient], Awaitable[int]], *, not_found: str = "no such run for this API key's tenant"
) -> int:
    """Runs `command` with a client of the configured API; a refusal is printed, exit status 1."""
    cli = load(CliSettings)
    if cli.api_key is None:
        raise RuntimeError("via_api needs AGENTSTREAM_API_KEY: check api_configured() first")
    async with RunsClient(cli.api_url, cli.api_key) as client:
        try:
            return await command(client)
        except NotFound:
            print(not_found, file=sys.stderr)
        except ApiError as exc:
            print(f"refused: {exc}", file=sys.stderr)
        return 1
