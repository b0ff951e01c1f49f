"""The retry rule and timeout of one MCP tool call, taken from the tool being called."""

from __future__ import annotations

from dataclasses import dataclass

from agentstream.tooling import RiskTier


@dataclass(frozen=True, slots=True)
class CallPolicy:
    """How one call is run, from the registration of the tool being called. A server's tools may
    differ (a read-only lookup beside an irreversible payment), so a call never takes the policy
    of whichever tool started the server."""

    risk: RiskTier
    idempotent: bool
    timeout_s: float

    @property
    def resendable(self) -> bool:
        # Re-sending after a lost connection is safe only where a duplicate run cannot hurt: the
        # server dedupes on the idempotency key, or the tool changes nothing.
        return self.idempotent or self.risk == "read_only"
