"""Every journal event type has its writers written down (agentstream/security/journal_trust.py): a
type without an entry would be refused from everyone. Forged events against the broker:
tests/integration/test_attack_forged_events.py."""

from __future__ import annotations


def test_every_journal_event_type_has_its_writers_written_down() -> None:
    """A new event type without an entry would be refused from everyone: the table must list it."""
    from agentstream import events
    from agentstream.security.journal_trust import WRITERS

    types = {c.__name__ for c in vars(events).values()
             if isinstance(c, type) and issubclass(c, events.RunEvent) and c is not events.RunEvent}  # fmt: skip
    assert types == set(WRITERS)
