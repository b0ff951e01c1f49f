"""The approvals API: a tenant's pending tool-call approvals, and a person's decision on one.

A decision is journaled as a signed ApprovalDecided naming the decider; the policy gate acts on
the first decision for a call (a person's or the timer's denial) and ignores later ones. The
decider on record is the API key that authenticated the request (`api:<tenant>:key/<key id>`),
never a name from the body: a body's `decided_by` is kept only as a note in the reason, so nobody
can decide in someone else's name (or in the timer's, which the views show as `expired`).

Deciding needs a key with the `approvals:decide` scope (checked by the gateway's route guard), and
never the key that created the run, unless the tenant's policy sets `allow_self_approval`: a script
holding the key that starts runs must not be able to approve what they ask for.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response

from agentstream.approvals import record_decision
from agentstream.client.journal import JournalClient
from agentstream.contract.requests import DecideApproval
from agentstream.contract.resources import ApprovalPage
from agentstream.contract.vocab import ApprovalDecision, ApprovalStatus
from agentstream.gateway.errors import ApiError, model_response
from agentstream.gateway.projection import ApprovalView, RunIndex
from agentstream.registry.entry import TenantPolicy
from agentstream.security.signing import Signer
from agentstream.tenancy.directory import ApiKey, Tenant

# An Authorization header -> the tenant and key it proves, or None (TenantDirectory.identify).
Identify = Callable[[str | None], tuple[Tenant, ApiKey] | None]
# A tenant id -> its current tool policy (read fresh for every decision).
PolicyOf = Callable[[str], TenantPolicy]


def decider(tenant_id: str, key: ApiKey) -> str:
    """The decider on record for a decision made with `key`."""
    return f"api:{tenant_id}:key/{key.key_id}"


class ApprovalsApi:
    def __init__(
        self,
        index: RunIndex,
        journal: JournalClient,
        signer: Signer,
        identify: Identify,
        policy_of: PolicyOf | None = None,
    ) -> None:
        self.index = index
        self.journal = journal
        self.signer = signer
        self.identify = identify
        self.policy_of = policy_of or (lambda _tenant: TenantPolicy())

    async def list(self, tenant_id: str, status: ApprovalStatus | None) -> Response:
        return model_response(ApprovalPage(data=[a.resource() for a in self.index.approvals_of(tenant_id, status)]))

    async def get(self, request: Request, tenant_id: str) -> Response:
        return model_response(self._find(request, tenant_id).resource())

    async def decide(self, request: Request, tenant_id: str, body: DecideApproval, caller_key_id: str) -> Response:
        # The gateway authenticated this very header (and checked its scope) before calling here;
        # it is read again so that a key revoked in between is refused, and must be the same key.
        found = self.identify(request.headers.get("authorization"))
        if found is None or found[0].tenant_id != tenant_id or found[1].key_id != caller_key_id:
            raise ApiError(401, "unauthenticated", "a valid API key is required: Authorization: Bearer <key>",
                           headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        approval = self._find(request, tenant_id)
        if approval.status != ApprovalStatus.PENDING:
            raise ApiError(409, "already_decided", f"the approval is already {approval.status}")
        self._refuse_self_approval(tenant_id, approval, found[1])
        reason = body.reason or body.decision
        if body.decided_by:
            reason = f"{reason} (decider's note: {body.decided_by})"
        await record_decision(
            self.journal, self.signer, approval.request, approved=body.decision == ApprovalDecision.APPROVE,
            decided_by=decider(tenant_id, found[1]), reason=reason,
        )  # fmt: skip
        return model_response(approval.resource(), 202)

    def _refuse_self_approval(self, tenant_id: str, approval: ApprovalView, key: ApiKey) -> None:
        run = self.index.get(tenant_id, approval.request.run_id)
        creator = run.api_key_id if run is not None else ""
        if creator and creator == key.key_id and not self.policy_of(tenant_id).allow_self_approval:
            raise ApiError(403, "self_approval", f"API key {key.key_id} created run {approval.request.run_id}, so it "
                           "may not decide that run's approvals: another person's key (with approvals:decide) "
                           "must, unless the tenant's policy sets allow_self_approval")  # fmt: skip

    def _find(self, request: Request, tenant_id: str) -> ApprovalView:
        approval = self.index.approval(tenant_id, request.path_params["approval_id"])
        if approval is None:  # another tenant's approval is indistinguishable from a missing one
            raise ApiError(404, "not_found", "approval not found")
        return approval
