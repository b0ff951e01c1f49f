"""The address rules against the real world: the system resolver, and registration's check of an
allowlist and a remote server's URL."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from agentstream.netguard.rules import (
    AddressRules,
    IPAddress,
    Resolver,
    Unresolvable,
    check_registered_host,
)


class SystemResolver:
    """getaddrinfo off the event loop, bounded in time."""

    def __init__(self, timeout_s: float = 5.0) -> None:
        self.timeout_s = timeout_s

    async def resolve(self, host: str, port: int) -> Sequence[IPAddress]:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP), self.timeout_s
            )
        except TimeoutError as exc:
            raise Unresolvable(f"{host} did not resolve within {self.timeout_s:g}s") from exc
        except socket.gaierror as exc:
            raise Unresolvable(f"{host} does not resolve: {exc.strerror}") from exc
        addresses: list[IPAddress] = []
        for family, *_rest, sockaddr in infos:
            if family in (socket.AF_INET, socket.AF_INET6):
                addresses.append(ipaddress.ip_address(str(sockaddr[0])))
        return addresses


async def check_registration(
    allowlist: Iterable[tuple[str, int | None]], url: str | None, *, rules: AddressRules, resolver: Resolver
) -> None:
    """Refuses (EgressRefused) an allowlist entry (parsed: host pattern and port) or a remote
    server URL that names a refused address, a local name, or a name resolving to a refused address."""
    for host, port in allowlist:
        await check_registered_host(host, port or 443, rules=rules, resolver=resolver)
    if url:
        parts = urlsplit(url)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise ValueError(f"bad port in URL {url!r}") from exc
        await check_registered_host(parts.hostname or "", port, rules=rules, resolver=resolver)
