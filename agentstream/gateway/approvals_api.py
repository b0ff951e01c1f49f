"""The approvals API: a tenant's pending tool-call approvals, and a person's decision on one.

A decision is journaled as a signed ApprovalDecided naming the decider; the policy gate acts on
the first decision for a call (a person's or the timer's denial) and ignores later ones.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agentstream.approvals import record_decision
from agentstream.client.journal import JournalClient
from agentstream.gateway.errors import ApiError
from agentstream.gateway.models import DecideApproval
from agentstream.gateway.projection import ApprovalView, RunIndex
from agentstream.security.signing import Signer

APPROVAL_STATUSES = ["pending", "approved", "denied", "expired"]


class ApprovalsApi:
    def __init__(self, index: RunIndex, journal: JournalClient, signer: Signer) -> None:
        self.index = index
        self.journal = journal
        self.signer = signer

    async def list(self, request: Request, tenant_id: str) -> Response:
        status = request.query_params.get("status")
        if status is not None and status not in APPROVAL_STATUSES:
            raise ApiError(400, "invalid_parameter", f"status must be one of: {', '.join(APPROVAL_STATUSES)}",
                           field="status")  # fmt: skip
        return JSONResponse({"data": [a.resource() for a in self.index.approvals_of(tenant_id, status)]})

    async def get(self, request: Request, tenant_id: str) -> Response:
        return JSONResponse(self._find(request, tenant_id).resource())

    async def decide(self, request: Request, tenant_id: str, body: DecideApproval) -> Response:
        approval = self._find(request, tenant_id)
        if approval.status != "pending":
            raise ApiError(409, "already_decided", f"the approval is already {approval.status}")
        who = f"api:{tenant_id}" + (f":{body.decided_by}" if body.decided_by else "")
        await record_decision(
            self.journal, self.signer, approval.request, approved=body.decision == "approve", decided_by=who,
            reason=body.reason or body.decision,
        )  # fmt: skip
        return JSONResponse(approval.resource(), status_code=202)

    def _find(self, request: Request, tenant_id: str) -> ApprovalView:
        approval = self.index.approval(tenant_id, request.path_params["approval_id"])
        if approval is None:  # another tenant's approval is indistinguishable from a missing one
            raise ApiError(404, "not_found", "approval not found")
        return approval
