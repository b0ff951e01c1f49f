"""The egress address rules as pure rules (issue 13, finding 2): internal addresses refused with a
reason, public ones passed, a name refused when any address it resolves to is internal, and a name
DNS cannot carry refused before any lookup. The same rules attacked through the gateway, the CLI,
the proxy and the remote-MCP client: tests/integration/test_attack_internal_egress.py."""

from __future__ import annotations

import ipaddress

import pytest

from agentstream.netguard import ALLOW_PRIVATE_ENV, AddressRules, EgressRefused, address_refusal, resolve_checked
from bench.attacks import egress as attacks


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "::1", "10.1.2.3", "172.31.255.255", "192.168.0.1", "100.64.0.1", "169.254.169.254", "fe80::1",
     "fd12:3456::1", "224.0.0.251", "ff02::1", "0.0.0.0", "::", "255.255.255.255", "240.0.0.1", "::ffff:127.0.0.1",
     "::ffff:10.0.0.1", "64:ff9b::7f00:1", "2002:a9fe:a9fe::1", "2001:db8::1", "192.0.2.1", "64:ff9b:1::1"],
)  # fmt: skip
def test_internal_addresses_are_refused_with_a_reason(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["93.184.215.14", "1.1.1.1", "2606:4700::1111", "64:ff9b::808:808"])
def test_public_addresses_pass(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is None


async def test_a_name_is_refused_when_any_address_it_resolves_to_is_internal() -> None:
    resolver = attacks.ScriptedResolver({"mixed.example": [["1.1.1.1", "127.0.0.1"]], "ok.example": [["1.1.1.1"]]})
    rules = AddressRules()
    with pytest.raises(EgressRefused, match="loopback"):
        await resolve_checked("mixed.example", 443, rules=rules, resolver=resolver)
    assert [str(a) for a in await resolve_checked("OK.example.", 443, rules=rules, resolver=resolver)] == ["1.1.1.1"]
    # The operator's exemption covers exactly its networks, and refuses a malformed one loudly.
    exempt = AddressRules.from_env({ALLOW_PRIVATE_ENV: "127.0.0.1/32"})
    assert await resolve_checked("127.0.0.1", 80, rules=exempt, resolver=resolver)
    with pytest.raises(EgressRefused):
        await resolve_checked("127.0.0.2", 80, rules=exempt, resolver=resolver)
    with pytest.raises(ValueError, match=ALLOW_PRIVATE_ENV):
        AddressRules.from_env({ALLOW_PRIVATE_ENV: "127.0.0.1/8"})  # host bits set: a typo, not a network


@pytest.mark.parametrize(
    "host", ["x\U00104dde.example", "a..example", "-lead.example", "a" * 64 + ".example", "sp ace.example"]
)
async def test_a_name_dns_cannot_carry_is_refused_before_any_lookup(host: str) -> None:
    # Found by the API fuzzer: such a name made the system resolver's IDNA codec raise (a 500).
    resolver = attacks.ScriptedResolver({})
    with pytest.raises(EgressRefused, match="not a valid host name"):
        await resolve_checked(host, 443, rules=AddressRules(), resolver=resolver)
    assert resolver.calls == []
