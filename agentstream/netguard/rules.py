"""Which network addresses a tenant's traffic may reach: the one rule shared by tool registration,
the sandbox's egress proxy and the executor's remote MCP client.

Pure: no sockets. Name resolution is a `Resolver` passed in, so the rules are testable with any
answer a hostile DNS server could give, and the callers pass the system's resolver.

An address is refused when it is (or embeds, as IPv4-mapped, NAT64 or 6to4 IPv6) loopback,
private (RFC 1918, CGNAT 100.64/10, ULA fc00::/7), link-local (169.254/16 with the cloud metadata
service, fe80::/10), multicast, unspecified, broadcast or reserved, or otherwise not globally
routable. The only way around it is the operator's `AGENTSTREAM_EGRESS_ALLOW_PRIVATE`, a
platform-level setting for tests and air-gapped installs, never anything a tenant sends.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Protocol

from agentstream.settings import EgressSettings, load

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

# Comma-separated CIDRs (e.g. "127.0.0.1/32") exempt from the address rules. Operator-only: it is
# read from the platform processes' environment, never from a registration or a request.
ALLOW_PRIVATE_ENV = "AGENTSTREAM_EGRESS_ALLOW_PRIVATE"

_NAT64 = IPv6Network("64:ff9b::/96")  # RFC 6052: the well-known prefix embeds an IPv4 address
_LOCAL_NAT64 = IPv6Network("64:ff9b:1::/48")  # RFC 8215: local-use translation, target unknowable
_CGNAT = IPv4Network("100.64.0.0/10")
_BROADCAST = IPv4Address("255.255.255.255")
# Names that mean "this machine" whatever DNS says (RFC 6761 reserves .localhost for loopback).
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


class EgressRefused(ValueError):
    """A destination the address rules refuse; the message names the host and why."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"{host} is refused as an egress destination: {reason}")
        self.host = host
        self.reason = reason


class Unresolvable(OSError):
    """A name that resolves to nothing (or not in time): nothing to connect to."""


class Resolver(Protocol):
    async def resolve(self, host: str, port: int) -> Sequence[IPAddress]:
        """Every address `host` resolves to for a TCP connection to `port`; raises OSError when none."""
        ...


def parse_literal(host: str) -> IPAddress | None:
    """The address `host` spells, in any form the C library would also accept (`127.1`,
    `2130706433`, `0x7f.0.0.1` all mean 127.0.0.1), or None for a name."""
    text = host.strip().strip("[]")
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        pass
    if text and all(c in "0123456789abcdefxABCDEFX." for c in text) and text[0].isdigit():
        try:
            return IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 one carries to an IPv4 host (mapped, NAT64, 6to4), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def address_refusal(address: IPAddress) -> str | None:
    """Why `address` may not be reached, or None when it is a public unicast address."""
    if isinstance(address, IPv6Address):
        if address.scope_id:
            return "a scoped (interface-local) IPv6 address"
        inner = embedded_ipv4(address)
        if inner is not None:
            reason = address_refusal(inner)
            return None if reason is None else f"it embeds {inner}, {reason}"
        if address in _LOCAL_NAT64:
            return "a local-use NAT64 address (its IPv4 target is not visible)"
        if address.teredo is not None:
            return "a Teredo tunnel address (its IPv4 endpoints are not checked)"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (this includes the cloud metadata service 169.254.169.254)"
    if address.is_multicast:
        return "a multicast address"
    if isinstance(address, IPv4Address) and address in _CGNAT:
        return "a shared (CGNAT, 100.64.0.0/10) address"
    if isinstance(address, IPv4Address) and address == _BROADCAST:
        return "the broadcast address"
    if address.is_private:
        return "a private address"
    if address.is_reserved or not address.is_global:
        return "a reserved or non-routable address"
    return None


@dataclass(frozen=True, slots=True)
class AddressRules:
    """The address rules plus the operator's exemptions (empty in production)."""

    allow_private: tuple[IPNetwork, ...] = ()

    @staticmethod
    def from_env(env: Mapping[str, str] | None = None) -> AddressRules:
        """The exemptions of `env`, by default this process's (read when the rules are built)."""
        if env is None:
            return AddressRules(tuple(load(EgressSettings).allow_private))
        raw = env.get(ALLOW_PRIVATE_ENV, "")
        return AddressRules.exempting(part for part in raw.split(",") if part.strip())

    @staticmethod
    def exempting(cidrs: Iterable[str]) -> AddressRules:
        networks: list[IPNetwork] = []
        for cidr in cidrs:
            try:
                networks.append(ipaddress.ip_network(cidr.strip(), strict=True))
            except ValueError as exc:
                raise ValueError(f"{ALLOW_PRIVATE_ENV}: {cidr.strip()!r} is not a CIDR network ({exc})") from exc
        return AddressRules(tuple(networks))

    def exempt(self, address: IPAddress) -> bool:
        candidates = [address]
        if isinstance(address, IPv6Address) and (inner := embedded_ipv4(address)) is not None:
            candidates.append(inner)
        return any(a in net for a in candidates for net in self.allow_private if a.version == net.version)

    def check_address(self, host: str, address: IPAddress) -> None:
        reason = address_refusal(address)
        if reason is not None and not self.exempt(address):
            shown = host if host == str(address) else f"{host} ({address})"
            raise EgressRefused(shown, reason)

    def check_name(self, host: str) -> IPAddress | None:
        """The checks that need no resolution: local names, and literal addresses. Returns the
        literal address `host` spells, if it is one."""
        name = host.strip().strip("[]").rstrip(".").lower()
        if not name:
            raise EgressRefused(repr(host), "an empty host name")
        literal = parse_literal(name)
        if literal is not None:
            self.check_address(host, literal)
            return literal
        if name in _LOCAL_NAMES or name.endswith(".localhost"):
            raise EgressRefused(host, "a name for this machine (loopback)")
        if not _is_host_name(name):
            raise EgressRefused(repr(host), "not a valid host name")
        return None


def _is_host_name(name: str) -> bool:
    """A name DNS can carry: IDNA-encodable, labels of letters, digits, '-' and '_', 1-63 bytes
    each, 253 in all. Anything else never resolves, and the resolver's codec raises on some of it."""
    try:
        encoded = name.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    return len(encoded) <= 253 and all(_LABEL.fullmatch(label) for label in encoded.split("."))


async def resolve_checked(host: str, port: int, *, rules: AddressRules, resolver: Resolver) -> list[IPAddress]:
    """Resolves `host` once and checks every address it gives; the caller must connect only to
    these (never resolve again, or a rebinding DNS server picks the second answer). One refused
    address refuses the name: which one a client would try first is not ours to predict."""
    literal = rules.check_name(host)
    if literal is not None:
        return [literal]
    name = host.strip().strip("[]").rstrip(".").lower()
    addresses = list(dict.fromkeys(await resolver.resolve(name, port)))
    if not addresses:
        raise Unresolvable(f"{host} resolves to no address")
    for address in addresses:
        rules.check_address(host, address)
    return addresses


async def check_registered_host(host: str, port: int, *, rules: AddressRules, resolver: Resolver) -> None:
    """Registration's check of an allowlisted host or a remote server's host. A wildcard is checked
    by its suffix's name alone. A name that does not resolve now is accepted (the proxy checks
    every connection anyway); one that resolves to a refused address is refused here, early."""
    if host.startswith("*."):
        rules.check_name(host[2:])
        return
    try:
        await resolve_checked(host, port, rules=rules, resolver=resolver)
    except (OSError, TimeoutError):
        return  # EgressRefused is a ValueError: it passes through
