"""Model routing policy: which tier of model a step needs. Pure functions only, so the
orchestrator can decide (and re-decide after a restart) the same tier from the same journal."""

from agentstream.routing.tiers import (
    FRONTIER,
    LONG_CONTEXT_TOKENS,
    SMALL,
    TIERS,
    choose_tier,
    estimate_tokens,
)

__all__ = ["FRONTIER", "LONG_CONTEXT_TOKENS", "SMALL", "TIERS", "choose_tier", "estimate_tokens"]
