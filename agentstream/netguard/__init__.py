"""Egress address rules (`rules`, pure), the system resolver and registration's check (`connect`),
and the TLS server name reader for the egress proxy (`sni`)."""

from agentstream.netguard.connect import SystemResolver, check_registration
from agentstream.netguard.rules import (
    ALLOW_PRIVATE_ENV,
    AddressRules,
    EgressRefused,
    IPAddress,
    Resolver,
    Unresolvable,
    address_refusal,
    parse_literal,
    resolve_checked,
)

__all__ = [
    "ALLOW_PRIVATE_ENV",
    "AddressRules",
    "EgressRefused",
    "IPAddress",
    "Resolver",
    "SystemResolver",
    "Unresolvable",
    "address_refusal",
    "check_registration",
    "parse_literal",
    "resolve_checked",
]
