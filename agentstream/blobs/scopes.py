"""Which blob scopes are a run's: every valid scope but the named ones, which hold a tenant's
long-lived data (`memory`). Retention and `agentstream blobs delete-run` delete a run's scope,
never a named one, even for a run whose id happens to be one of them."""

from __future__ import annotations

from agentstream.blobs.errors import BlobHandleInvalid
from agentstream.blobs.handle import check_scope, check_tenant

NAMED_SCOPES = frozenset({"memory"})


def run_scope_problem(tenant_id: str, run_id: str) -> str | None:
    """Why the blob scope of this tenant's run must not be deleted, or None."""
    if run_id in NAMED_SCOPES:
        return f"{run_id!r} is a named blob scope, not a run's"
    try:
        check_tenant(tenant_id)
        check_scope(run_id)
    except BlobHandleInvalid as exc:
        return f"no blob can be stored there ({exc})"
    return None
