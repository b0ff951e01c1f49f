"""Commands that go through the run API when the user has an API key, one way for all of them:
`AGENTSTREAM_API_KEY` (and `AGENTSTREAM_API_URL`, default the local gateway) set means the API,
acting as that key's tenant; unset means the operator's direct path (the journal)."""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable

from agentstream.client.http import ApiError, NotFound, RunsClient

API_KEY_ENV = "AGENTSTREAM_API_KEY"
API_URL_ENV = "AGENTSTREAM_API_URL"
DEFAULT_API_URL = "http://127.0.0.1:8080"


def api_configured() -> bool:
    return bool(os.environ.get(API_KEY_ENV))


async def via_api(
    command: Callable[[RunsClient], Awaitable[int]], *, not_found: str = "no such run for this API key's tenant"
) -> int:
    """Runs `command` with a client of the configured API; a refusal is printed, exit status 1."""
    url = os.environ.get(API_URL_ENV) or DEFAULT_API_URL
    async with RunsClient(url, os.environ[API_KEY_ENV]) as client:
        try:
            return await command(client)
        except NotFound:
            print(not_found, file=sys.stderr)
        except ApiError as exc:
            print(f"refused: {exc}", file=sys.stderr)
        return 1
