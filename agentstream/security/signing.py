"""HMAC signatures over decisions. A producer that can write to the journal but does not hold the
platform's signing keys (a compromised client, a forged event) cannot make one that verifies."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, replace

from agentstream import ids
from agentstream.config import Settings
from agentstream.events import ApprovalDecided, ToolCallAuthorized

TIMEOUT = "timeout"  # the decider named on the approval timer's denials


def arguments_digest(arguments_json: str) -> str:
    return hashlib.sha256(arguments_json.encode()).hexdigest()


class Signer:
    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("signing keys must be at least 256 bits")
        self._key = key

    def sign(self, *fields: str) -> str:
        # The unit separator cannot occur in ids or digests, so distinct field lists never collide.
        return hmac.new(self._key, "\x1f".join(fields).encode(), hashlib.sha256).hexdigest()

    def verify(self, signature: str, *fields: str) -> bool:
        return hmac.compare_digest(self.sign(*fields), signature)


def _capability_fields(event: ToolCallAuthorized) -> tuple[str, ...]:
    # v2 also binds the idempotency key and the timeout: both shape the side effect, and a copy
    # with another idempotency key would get past a tool's own dedupe (a second payment).
    return (
        "capability/v2",
        event.run_id,
        event.tenant_id,
        event.call_id,
        event.tool,
        event.tool_version,
        arguments_digest(event.arguments_json),
        event.idempotency_key,
        str(event.timeout_ms),
        str(event.expires_ms),
        event.authorized_by,
    )


def sign_capability(signer: Signer, event: ToolCallAuthorized) -> str:
    """The capability for an authorization event (its own `capability` field is not signed)."""
    return signer.sign(*_capability_fields(event))


def capability_verifies(signer: Signer, event: ToolCallAuthorized) -> bool:
    """Issued by the policy gate for exactly this run, call, tool version, arguments, idempotency
    key, timeout, expiry and authorizer (expired or not)."""
    return bool(event.capability) and signer.verify(event.capability, *_capability_fields(event))


def capability_problem(signer: Signer, event: ToolCallAuthorized, now_ms: int) -> str | None:
    """Why this authorization must not run now, or None when it may."""
    if not capability_verifies(signer, event):
        return "the capability does not verify (not issued by the policy gate for this exact call)"
    if now_ms > event.expires_ms:
        return f"the capability expired {(now_ms - event.expires_ms) / 1000:.1f} s ago"
    return None


def _approval_fields(event: ApprovalDecided) -> tuple[str, ...]:
    return ("approval/v1", event.run_id, event.tenant_id, event.call_id, event.approval_id,
            "approved" if event.approved else "denied", event.decided_by, str(event.decided_ms))  # fmt: skip


def sign_approval(signer: Signer, event: ApprovalDecided) -> str:
    return signer.sign(*_approval_fields(event))


def signed_decision(
    signer: Signer,
    *,
    run_id: str,
    tenant_id: str,
    call_id: str,
    approval_id: str,
    approved: bool,
    decided_by: str,
    reason: str,
    decided_ms: int,
) -> ApprovalDecided:
    """A decision on an approval, signed; `decided_by="timeout"` is the timer's denial."""
    unsigned = ApprovalDecided(
        ids.approval_decided_id(call_id, by_timeout=decided_by == TIMEOUT),
        run_id, tenant_id, call_id, approval_id, approved, decided_by, reason, decided_ms, "",
    )  # fmt: skip
    return replace(unsigned, signature=sign_approval(signer, unsigned))


def approval_verifies(signer: Signer, event: ApprovalDecided) -> bool:
    return bool(event.signature) and signer.verify(event.signature, *_approval_fields(event))


@dataclass(frozen=True)
class PlatformSigners:
    capability: Signer  # the policy gate signs, the tool executor verifies
    approval: Signer  # the gateway and the approval timer sign, the policy gate verifies
    delegation: bytes  # the policy gate issues credential delegations, the executor redeems them


def platform_signers(settings: Settings) -> PlatformSigners:
    from agentstream.credentials.keys import local_key_provider

    provider = local_key_provider(settings)
    return PlatformSigners(
        capability=Signer(provider.signing_key("capability")),
        approval=Signer(provider.signing_key("approval")),
        delegation=provider.signing_key("delegation"),
    )
