"""The sandbox's egress allowlist as a rule, without a sandbox or a proxy (both at work:
tests/integration/test_sandbox.py)."""

from __future__ import annotations

import pytest

from agentstream.sandbox import (
    SandboxPolicy,
    egress_allowed,
)


@pytest.mark.parametrize(
    ("host", "port", "allowed"),
    [("api.example.com", 443, True), ("API.Example.COM.", 443, True), ("api.example.com", 80, False),
     ("a.b.example.org", 8080, True), ("example.org", 80, False), ("evilexample.org", 80, False),
     ("10.0.0.1", 5432, True), ("10.0.0.1", 5433, False), ("::1", 8000, True), ("other.com", 443, False)],
)  # fmt: skip
def test_egress_allowlist_matching(host: str, port: int, allowed: bool) -> None:
    allowlist = ("api.example.com:443", "*.example.org", "10.0.0.1:5432", "[::1]:8000")
    assert egress_allowed(allowlist, host, port) is allowed


@pytest.mark.parametrize("entry", ["", "*", "exa*mple.com", "host:0", "host:http", "[::1", "a/b"])
def test_bad_allowlist_entries_are_refused(entry: str) -> None:
    with pytest.raises(ValueError):
        SandboxPolicy(egress_allowlist=(entry,))
