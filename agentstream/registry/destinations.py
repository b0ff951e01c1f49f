"""Registration's part of the egress rules: a tool's allowlist and its remote server's URL may not
name loopback, private, link-local, multicast or other internal addresses, nor a name that
resolves to one (`agentstream.netguard`). The proxy and the executor check again at every
connection, since what a name resolves to can change after registration."""

from __future__ import annotations

from agentstream.netguard import AddressRules, Resolver, SystemResolver, check_registration
from agentstream.registry.entry import ToolEntry
from agentstream.sandbox.policy import parse_allow_entry


async def check_destinations(
    entry: ToolEntry, *, rules: AddressRules | None = None, resolver: Resolver | None = None
) -> None:
    """Raises EgressRefused (a ValueError) naming the refused host and why."""
    url = str(entry.transport.get("url") or "") if entry.transport.get("kind") == "http" else None
    await check_registration(
        [parse_allow_entry(allowed) for allowed in entry.egress],
        url,
        rules=rules if rules is not None else AddressRules.from_env(),
        resolver=resolver if resolver is not None else SystemResolver(timeout_s=3.0),
    )
