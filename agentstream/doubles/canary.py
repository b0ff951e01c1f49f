"""A regressed orchestrator version, for the canary test and for trying rollouts by hand: a test
double, never a version to run for real. Its one tool-choice rule sends every `get_current_time`
call to a time zone that does not exist, so each of those calls fails: a regression the
`tool_error_rate` alert grouped by version sees.

    AGENTSTREAM_ORCHESTRATOR_VERSIONS=agentstream.doubles.canary:REGRESSED agentstream dev
    agentstream rollout start v2-regressed --internal-tenant staff
"""

from __future__ import annotations

import orjson

from agentstream.processors.orchestrator.versions import OrchestratorVersion


def _unknown_zone(tool: str, arguments_json: str) -> tuple[str, str] | None:
    if tool != "get_current_time":
        return None
    arguments = orjson.loads(arguments_json or "{}")
    return tool, orjson.dumps({**arguments, "timezone": "Mars/Olympus_Mons"}).decode()


REGRESSED = OrchestratorVersion(
    "v2-regressed", tool_rules=(_unknown_zone,), description="test double: every get_current_time call fails"
)
