"""Settings of the orchestrator: which versions it can decide with and which one new runs start on."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator
from pydantic_settings import NoDecode

from agentstream.settings.base import ComponentSettings, split_list, variable


class OrchestratorSettings(ComponentSettings):
    COMPONENT = "orchestrator"

    version: str = variable(
        "v1", "AGENTSTREAM_ORCHESTRATOR_VERSION",
        "the orchestrator version new runs start on (pinned in RunStarted; a started run keeps its own to the "
        "end); an unknown name stops the orchestrator at its start",
        min_length=1,
    )  # fmt: skip
    versions: Annotated[tuple[str, ...], NoDecode, BeforeValidator(split_list)] = variable(
        (), "AGENTSTREAM_ORCHESTRATOR_VERSIONS",
        "more versions this orchestrator can decide with, besides the built-in ones: `module:attribute` each "
        "(an OrchestratorVersion), comma-separated",
    )  # fmt: skip
    subagent_max_depth: int = variable(
        3, "AGENTSTREAM_SUBAGENT_MAX_DEPTH",
        "how deep a run tree may grow: a run at this depth (a top-level run is at 0) may start no subagent; "
        "its spawn_agent calls are refused with the reason as their result",
        ge=0,
    )  # fmt: skip
    subagent_max_children: int = variable(
        16, "AGENTSTREAM_SUBAGENT_MAX_CHILDREN",
        "how many subagents one run may start in all; a spawn_agent call over it is refused with the reason "
        "as its result",
        ge=0,
    )  # fmt: skip
