"""Recording a person's decision on an approval request: a signed ApprovalDecided in the journal.

Used by the gateway's approvals API and the local demo. The policy gate ignores decisions whose
signature does not verify, so only holders of the platform's approval key can approve anything.
"""

from __future__ import annotations

import time

from agentstream.client.journal import JournalClient
from agentstream.events import ApprovalDecided, ApprovalRequested
from agentstream.security.signing import Signer, signed_decision


async def record_decision(
    journal: JournalClient,
    signer: Signer,
    request: ApprovalRequested,
    *,
    approved: bool,
    decided_by: str,
    reason: str,
) -> ApprovalDecided:
    decided = signed_decision(
        signer,
        run_id=request.run_id,
        tenant_id=request.tenant_id,
        call_id=request.call_id,
        approval_id=request.approval_id,
        approved=approved,
        decided_by=decided_by,
        reason=reason,
        decided_ms=int(time.time() * 1000),
    )
    await journal.append(decided)
    return decided
