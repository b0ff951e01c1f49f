"""Provider-neutral tool types: the boundary between the tool executor and whatever runs a tool."""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, Protocol

from agentstream.llm import ToolSpec

RiskTier = Literal["read_only", "reversible", "irreversible"]

# The secrets redeemed for the call running in this task, by name. Set by the tool executor for
# the duration of one call only, so no tool host keeps them and no signature carries them.
CURRENT_CREDENTIALS: ContextVar[Mapping[str, str]] = ContextVar("agentstream_credentials", default=MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class ToolDescriptor:
    """What the catalog knows of a tool: the spec the model sees plus how it may be run."""

    spec: ToolSpec
    source: str  # "builtin" or "mcp:<server name>"
    risk: RiskTier
    # True when the tool itself dedupes on the idempotency key, so re-driving a call is safe.
    idempotent: bool
    version: str = "1"
    timeout_s: float = 30.0
    scopes: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()  # tenant secrets the tool receives at call time (CURRENT_CREDENTIALS)


@dataclass(frozen=True, slots=True)
class ToolResult:
    content: str
    is_error: bool = False


class ToolError(Exception):
    """A tool failed in a way the model should see as an error observation (bad arguments,
    tool-reported failure, timeout, crash). Never a reason to crash the executor."""


class ToolHost(Protocol):
    """Runs tools. Implementations: built-in Python tools, MCP stdio servers."""

    def descriptors(self) -> list[ToolDescriptor]: ...

    async def call(
        self, name: str, arguments: dict[str, Any], *, idempotency_key: str, timeout_s: float
    ) -> ToolResult: ...

    async def aclose(self) -> None: ...
