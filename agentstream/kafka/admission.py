"""Whether a consumed journal record may reach any core: its writer proven, its body decodable and
matching its signed type, a run request's proof checked, and the record in its run's partition."""

from __future__ import annotations

from confluent_kafka import Message

from agentstream.codec import DecodeError
from agentstream.events import Event, RunEvent, RunRequested
from agentstream.kafka.journal import RecordFactory
from agentstream.security.journal_trust import JournalVerifier


def admit(
    msg: Message, type_name: str | None, partition: int, records: RecordFactory, verifier: JournalVerifier | None
) -> tuple[Event | None, str | None]:
    """The decoded event, or why it must not reach any core. The writer is checked before
    decoding: nothing whose writer is not proven reaches the decoder or a core."""
    if verifier is not None and (problem := verifier.problem(msg, type_name)) is not None:
        return None, problem
    try:
        event = records.codec.decode(msg.value())
    except DecodeError as exc:
        return None, str(exc)
    if verifier is not None and event.type_name != type_name:
        return None, f"body is {event.type_name}, signed as {type_name}"
    if (
        verifier is not None
        and verifier.require_run_proof
        and isinstance(event, RunRequested)
        and (problem := verifier.run_proof_problem(msg, event.tenant_id, event.run_id)) is not None
    ):
        return None, problem
    if isinstance(event, RunEvent) and partition != (home := records.journal_partition(event.run_id)):
        # Each partition's state (a call ledger, a budget) is a run's only record; a copy of a
        # genuine event planted in another partition would be a second, unrelated record of it
        # there, e.g. a signed authorization executed a second time.
        return None, f"event of run {event.run_id} in partition {partition}, not its run's partition {home}"
    return event, None
