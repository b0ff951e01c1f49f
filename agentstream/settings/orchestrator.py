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
