"""The run API's one typed contract, shared by the gateway (which validates requests and builds
responses with it), the SDK (which sends and parses with it) and the OpenAPI document (generated
from it: `python -m agentstream.contract.openapi`).

- `vocab`: the closed vocabularies (`RunStatus`, `ApprovalStatus`, `ApprovalDecision`, `CostGroup`);
- `requests`: request bodies; `queries`: query strings and header patterns;
- `resources`: every response body, errors included;
- `routes`: the operation table (method, path, scope, query, body, answers);
- `openapi`: the document.
"""

from agentstream.contract.vocab import (
    SETTLED_STATUSES,
    TERMINAL_STATUSES,
    ApprovalDecision,
    ApprovalStatus,
    CostGroup,
    RunStatus,
)

__all__ = [
    "SETTLED_STATUSES",
    "TERMINAL_STATUSES",
    "ApprovalDecision",
    "ApprovalStatus",
    "CostGroup",
    "RunStatus",
]
