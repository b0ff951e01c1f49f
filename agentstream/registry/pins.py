"""Tool identity: what a run pins and what a secret is granted to.

A tool is identified by its owner (a tenant, or the platform), its name and the digest of its
contract (everything a registration says about it: transport, schema, tier, scopes, egress, secrets,
timeouts). A name alone is not an identity: a tenant may register a tool named like a platform
tool, and its own tool then shadows the platform's in that tenant's *new* runs. So

* a run pins each tool as `<owner or _platform>/<version>@<digest>` when it starts (RunStarted's
  `tool_pins`), and the gate and the executor resolve exactly that owner's version, with the same
  contract: a later registration, by anyone, never changes what a running run calls;
* a secret is granted to identities (`agentstream.credentials.grants`), so a same-named tool of
  another owner, or another contract, never receives it.
"""

from __future__ import annotations

import hashlib
from dataclasses import MISSING, dataclass, fields
from typing import Any

import orjson

from agentstream.events import ToolRegistered
from agentstream.registry.catalog import ToolCatalog
from agentstream.registry.entry import PLATFORM, ToolEntry

DIGEST_HEX = 32  # 128 bits: no registration can be made to collide with another's digest
# Not part of the contract: where the record lives and when it was written.
_NOT_CONTRACT = frozenset({"event_id", "version", "registered_ms"})


@dataclass(frozen=True, slots=True)
class ToolIdentity:
    owner: str  # a tenant id, or "" for the platform
    name: str
    digest: str  # the contract digest; "" when unknown (then only grants without a digest match)

    @property
    def text(self) -> str:
        """`<owner or _platform>/<name>@<digest>`: how grants and messages name it."""
        return f"{self.owner or PLATFORM}/{self.name}@{self.digest}"


def contract_digest(entry: ToolEntry) -> str:
    """The digest of everything a registration of `entry` says, owner and name included.

    Computed from the registry record itself, so a field added to the contract later is covered
    without a change here; a field left at its default is left out, so adding one does not change
    the digest of tools registered before it existed (and so the pins of running runs)."""
    # Every tool call resolves its pin: remembered per entry object (entries are frozen, and the
    # cache holds the entry, so its id is not reused while cached).
    known = _DIGESTS.get(id(entry))
    if known is not None and known[0] is entry:
        return known[1]
    digest = _compute_digest(entry)
    if len(_DIGESTS) >= _DIGESTS_KEPT:
        _DIGESTS.clear()
    _DIGESTS[id(entry)] = (entry, digest)
    return digest


_DIGESTS: dict[int, tuple[ToolEntry, str]] = {}
_DIGESTS_KEPT = 4096


def _compute_digest(entry: ToolEntry) -> str:
    record: dict[str, Any] = {}
    event = entry.to_event()
    for f in fields(ToolRegistered):
        if f.name in _NOT_CONTRACT:
            continue
        value = getattr(event, f.name)
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        if default is not MISSING and value == default:
            continue
        record[f.name] = value
    canonical = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()[:DIGEST_HEX]


def identity_of(entry: ToolEntry) -> ToolIdentity:
    return ToolIdentity(entry.owner, entry.name, contract_digest(entry))


def pin_of(entry: ToolEntry) -> str:
    """What a run records for a tool it pins: `<owner or _platform>/<version>@<digest>`."""
    return f"{entry.owner or PLATFORM}/{entry.version}@{contract_digest(entry)}"


def parse_pin(pin: str) -> tuple[str, str, str] | None:
    """(owner, version, digest) of a pin; None for a bare version (pinned before pins existed)."""
    head, at, digest = pin.rpartition("@")
    owner, slash, version = head.partition("/")
    if not (at and slash and owner and version and digest):
        return None
    return ("" if owner == PLATFORM else owner), version, digest


def resolve_pin(catalog: ToolCatalog, tenant_id: str, name: str, pin: str) -> ToolEntry | None:
    """The exact tool a run pinned, or None: another owner's tool of the same name, a version that
    is gone or a record whose contract changed under the same version are never it. A bare version
    (a run started before pins existed) is resolved by name, as it was then."""
    parsed = parse_pin(pin)
    if parsed is None:
        return catalog.pinned(tenant_id, name, pin)
    owner, version, digest = parsed
    if owner not in ("", tenant_id):
        return None  # another tenant's tool is never one of this tenant's runs' tools
    entry = catalog.versions.get((owner, name), {}).get(version)
    if entry is None or contract_digest(entry) != digest:
        return None
    return entry
