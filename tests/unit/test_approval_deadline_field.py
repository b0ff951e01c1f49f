"""A tool's approval deadline as a registration field, without a broker: registrations from before
the field carried it in their transport and still read as the field (deadlines enforced through the
whole stack: tests/e2e/test_approval_deadlines.py)."""

from __future__ import annotations

import dataclasses

import pytest

from agentstream.events import (
    ToolRegistered,
)
from agentstream.registry.admin import RegistryError, validate_entry
from agentstream.registry.entry import TenantPolicy, ToolEntry


def test_a_deadline_stored_inside_an_older_registrations_transport_is_still_honoured() -> None:
    """Registrations from before the field carried the deadline in their transport; they read as
    the field, and re-registering the same tool with the field is the same contract."""
    old = ToolRegistered("tool/globex/w/1", "w", "1", "", '{"type":"object"}', "stdio:w", "irreversible", False,
                         30_000, "globex", [], [], '{"approval_timeout_s":4,"command":"x","kind":"stdio"}')  # fmt: skip
    entry = ToolEntry.from_event(old)
    assert entry.approval_timeout_s == 4 and "approval_timeout_s" not in entry.transport
    assert TenantPolicy(approval_timeout_s=600).approval_timeout_for(entry) == 4
    assert TenantPolicy(approval_timeout_s=2).approval_timeout_for(entry) == 2
    again = ToolEntry("w", "", {"type": "object"}, "irreversible", {"kind": "stdio", "command": "x"}, owner="globex",
                      approval_timeout_s=4.0)  # fmt: skip
    assert entry.same_contract(again)
    assert ToolEntry.from_event(again.to_event()).approval_timeout_s == 4
    # New registrations name it only as the field.
    with pytest.raises(RegistryError, match="a field of the registration"):
        validate_entry(dataclasses.replace(again, transport={**again.transport, "approval_timeout_s": 4}))
