"""HMAC signatures over decisions. A producer that can write to the journal but does not hold the
platform's signing keys (a compromised client, a forged event) cannot make one that verifies."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import replace

from agentstream import ids
from agentstream.config import Settings
from agentstream.credentials.errors import CredentialError
from agentstream.credentials.signing_keys import Keyring, VersionedKey
from agentstream.events import ApprovalDecided, ToolCallAuthorized

TIMEOUT = "timeout"  # the decider named on the approval timer's denials


def arguments_digest(arguments_json: str) -> str:
    return hashlib.sha256(arguments_json.encode()).hexdigest()


class Signer:
    """HMAC signatures that name their key: `<key id>:<hex>`. Verifying looks the key id up (in the
    process's keyring when it has one), so a rotated key's signatures verify until it retires and
    are refused after."""

    def __init__(
        self,
        key: bytes,
        kid: str = "k0",
        lookup: Callable[[str], VersionedKey | None] | None = None,
        current: Callable[[], VersionedKey] | None = None,
    ) -> None:
        if len(key) < 32:
            raise ValueError("signing keys must be at least 256 bits")
        fixed = VersionedKey(kid, key)
        self._lookup = lookup or (lambda k: fixed if k == kid else None)
        self._current = current or (lambda: fixed)

    @staticmethod
    def from_keyring(keyring: Keyring, purpose: str) -> Signer:
        """Signs with the keyring's current key for `purpose` (it follows rotations)."""
        first = keyring.signing_key(purpose)
        return Signer(first.key, first.kid, lambda kid: keyring.lookup(purpose, kid),
                      lambda: keyring.signing_key(purpose))  # fmt: skip

    def sign(self, *fields: str) -> str:
        current = self._current()
        return f"{current.kid}:{_mac(current.key, fields)}"

    def verify(self, signature: str, *fields: str, now_ms: int | None = None) -> bool:
        kid, sep, mac = signature.partition(":")
        found = self._lookup(kid) if sep else None
        if found is None or found.retired_at(int(time.time() * 1000) if now_ms is None else now_ms):
            return False
        return hmac.compare_digest(_mac(found.key, fields), mac)


def _mac(key: bytes, fields: tuple[str, ...]) -> str:
    # The unit separator cannot occur in ids or digests, so distinct field lists never collide.
    return hmac.new(key, "\x1f".join(fields).encode(), hashlib.sha256).hexdigest()


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


class PlatformSigners:
    """The signers one process holds. Asking for a purpose its component's bundle lacks (the
    gateway asking for the capability key) raises `CredentialError`: it was never given the key."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    def _signer(self, purpose: str) -> Signer:
        if purpose not in self.keyring.purposes:
            raise CredentialError(f"this process holds no {purpose} key ({self.keyring.path})")
        return Signer.from_keyring(self.keyring, purpose)

    @property
    def capability(self) -> Signer:  # the policy gate signs, the tool executor verifies
        return self._signer("capability")

    @property
    def approval(self) -> Signer:  # the gateway and the approval timer sign, the policy gate verifies
        return self._signer("approval")

    @property
    def delegation(self) -> Keyring:  # the policy gate issues credential delegations, the executor redeems them
        if "delegation" not in self.keyring.purposes:
            raise CredentialError(f"this process holds no delegation key ({self.keyring.path})")
        return self.keyring


def platform_signers(settings: Settings, component: str = "admin") -> PlatformSigners:
    """The signers in `component`'s key bundle ("admin": the operator's tools, which hold all)."""
    from agentstream.credentials.signing_keys import component_keyring

    return PlatformSigners(component_keyring(settings, component))
