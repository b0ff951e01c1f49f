"""API key scopes: what a key may do, checked by the gateway on every route.

A key carries a set of scopes; `admin` implies every other one. A key issued without scopes (and
every key issued before scopes existed) gets `DEFAULT_SCOPES`: it can run agents, read them and
register its tenant's tools, as every key could, but not decide approvals. Deciding is a person's
act, given to the keys of the people who approve (`agentstream keys issue T --scopes approvals:decide`),
so a script holding the key that starts runs cannot approve what its runs ask for.
"""

from __future__ import annotations

from collections.abc import Iterable

RUNS_READ = "runs:read"
RUNS_WRITE = "runs:write"
APPROVALS_DECIDE = "approvals:decide"
TOOLS_WRITE = "tools:write"
# Reading the tenant's audit warehouse rows (SQL over the whole history): an auditor's key, not every script's.
AUDIT_READ = "audit:read"
# Reading the contents of the tenant's long-term memory (GET /v1/memory/export): what runs learnt is
# private data (the policy gate taints it), so like audit:read no key has it by default.
MEMORY_READ = "memory:read"
ADMIN = "admin"
SCOPES: tuple[str, ...] = (RUNS_READ, RUNS_WRITE, APPROVALS_DECIDE, TOOLS_WRITE, AUDIT_READ, MEMORY_READ, ADMIN)
DEFAULT_SCOPES: tuple[str, ...] = (RUNS_READ, RUNS_WRITE, TOOLS_WRITE)


class ScopeError(ValueError):
    """An unknown scope name, with a message fit to show as is."""


def normalize_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """Known scopes, deduplicated and in the canonical order; raises ScopeError on an unknown one."""
    given = {s.strip() for s in scopes if s.strip()}
    unknown = sorted(given - set(SCOPES))
    if unknown:
        raise ScopeError(f"unknown scope {unknown[0]!r}: use any of {', '.join(SCOPES)}")
    return tuple(s for s in SCOPES if s in given)


def effective_scopes(stored: Iterable[str]) -> frozenset[str]:
    """What a key may do: its scopes, or the defaults for a key stored without any. A scope this
    version does not know (written by a newer one) grants nothing here."""
    listed = tuple(stored)
    if not listed:
        return frozenset(DEFAULT_SCOPES)
    known = frozenset(s for s in listed if s in SCOPES)
    return frozenset(SCOPES) if ADMIN in known else known


def has_scope(scopes: frozenset[str], needed: str) -> bool:
    return needed in scopes or ADMIN in scopes
