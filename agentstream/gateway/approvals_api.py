"""The approvals API: a tenant's pending tool-call approvals, and a person's decision on one.

A decision is journaled as a signed ApprovalDecided naming the decider; the policy gate acts on
the first decision for a call (a person's or the timer's denial) and ignores later ones. The
decider on record is the API key that authenticated the request (`api:<tenant>:key/<key id>`),
never a name from the body: a body's `decided_by` is kept only as a note in the reason, so nobody
can decide in someone else's name (or in the timer's, which the views show as `expired`).
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agentstream.approvals import record_decision
from agentstream.client.journal import JournalClient
from agentstream.gateway.errors import ApiError
from agentstream.gateway.models import DecideApproval
from agentstream.gateway.projection import ApprovalView, RunIndex
from agentstream.security.signing import Signer
from agentstream.tenancy.directory import ApiKey, Tenant

APPROVAL_STATUSES = ["pending", "approved", "denied", "expired"]
# An Authorization header -> the tenant and key it proves, or None (TenantDirectory.identify).
Identify = Callable[[str | None], tuple[Tenant, ApiKey] | None]


def decider(tenant_id: str, key: ApiKey) -> str:
    """The decider on record for a decision made with `key`."""
    return f"api:{tenant_id}:key/{key.key_id}"


class ApprovalsApi:
    def __init__(self, index: RunIndex, journal: JournalClient, signer: Signer, identify: Identify) -> None:
        self.index = index
        self.journal = journal
        self.signer = signer
        self.identify = identify

    async def list(self, request: Request, tenant_id: str) -> Response:
        status = request.query_params.get("status")
        if status is not None and status not in APPROVAL_STATUSES:
            raise ApiError(400, "invalid_parameter", f"status must be one of: {', '.join(APPROVAL_STATUSES)}",
                           field="status")  # fmt: skip
        return JSONResponse({"data": [a.resource() for a in self.index.approvals_of(tenant_id, status)]})

    async def get(self, request: Request, tenant_id: str) -> Response:
        return JSONResponse(self._find(request, tenant_id).resource())

    async def decide(self, request: Request, tenant_id: str, body: DecideApproval) -> Response:
        # The gateway authenticated this very header before calling here; it is read again for
        # the key, which the gateway's caller does not carry. A key revoked in between is refused.
        found = self.identify(request.headers.get("authorization"))
        if found is None or found[0].tenant_id != tenant_id:
            raise ApiError(401, "unauthenticated", "a valid API key is required: Authorization: Bearer <key>",
                           headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        approval = self._find(request, tenant_id)
        if approval.status != "pending":
            raise ApiError(409, "already_decided", f"the approval is already {approval.status}")
        reason = body.reason or body.decision
        if body.decided_by:
            reason = f"{reason} (decider's note: {body.decided_by})"
        await record_decision(
            self.journal, self.signer, approval.request, approved=body.decision == "approve",
            decided_by=decider(tenant_id, found[1]), reason=reason,
        )  # fmt: skip
        return JSONResponse(approval.resource(), status_code=202)

    def _find(self, request: Request, tenant_id: str) -> ApprovalView:
        approval = self.index.approval(tenant_id, request.path_params["approval_id"])
        if approval is None:  # another tenant's approval is indistinguishable from a missing one
            raise ApiError(404, "not_found", "approval not found")
        return approval
