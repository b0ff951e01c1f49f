"""Quarantining a tool whose output is poisoned, and lifting it.

The order is the point. The tool is disabled first, so no run consumes more of its output while
the journal is searched; each exposed live run gets its own kill switch (it halts at its next
model or tool call, and can be resumed once released); every exposed run, live or ended, gets a
`RunFlagged` of kind "quarantine" in its journal, so its record says why; the quarantine itself is
recorded last, with the runs it found, on the compacted control topic. Re-running a quarantine is
harmless: every write is keyed by the quarantine and the run, so a repeat overwrites itself."""

from __future__ import annotations

import time

import orjson

from agentstream.budgets.controls import set_kill_switch
from agentstream.client.journal import JournalClient, JournalEntry
from agentstream.client.scan import read_journal
from agentstream.config import Settings
from agentstream.events import RunFlagged, RunStarted, ToolQuarantined
from agentstream.kafka.table import put_record
from agentstream.quarantine.book import QuarantineError, read_quarantines
from agentstream.quarantine.exposure import Exposure, candidates, exposure_of
from agentstream.registry import admin
from agentstream.topics import CONTROL, load_topics

FLAG_KIND = "quarantine"


def quarantine_key(quarantine_id: str) -> str:
    return f"quarantine/{quarantine_id}"


def flag_event(exposure: Exposure, quarantine_id: str, owner: str, tool: str, reason: str) -> RunFlagged:
    evidence = {"quarantine_id": quarantine_id, "owner": owner, "tool": tool, "call_id": exposure.call_id,
                "consumed_ms": exposure.consumed_ms, "ended": exposure.ended}  # fmt: skip
    return RunFlagged(
        event_id=f"{exposure.run_id}/quarantine/{quarantine_id}",
        run_id=exposure.run_id,
        tenant_id=exposure.tenant_id,
        step=exposure.step,
        kind=FLAG_KIND,
        reason=f"consumed the output of quarantined tool {tool}: {reason}",
        signature=quarantine_key(quarantine_id),
        count=1,
        evidence_json=orjson.dumps(evidence).decode(),
    )


async def find_exposures(settings: Settings, owner: str, tool: str, since_ms: int) -> list[Exposure]:
    """Every run that consumed `owner`'s `tool` output since `since_ms`, in run id order."""
    window = await read_journal(settings, since_ms=since_ms)
    client = JournalClient(settings)
    found: list[Exposure] = []
    try:
        for run_id in sorted(candidates(window, tool, since_ms)):
            entries: list[JournalEntry] = window[run_id]
            if not any(isinstance(e.event, RunStarted) for e in entries):
                # Started before the window: its pins and authorizations are earlier in its journal.
                entries = await client.read_run(run_id)
            exposure = exposure_of(entries, owner, tool, since_ms)
            if exposure is not None:
                found.append(exposure)
    finally:
        await client.aclose()
    return found


async def quarantine_tool(
    settings: Settings, owner: str, tool: str, since_ms: int, *, reason: str, by: str, quarantine_id: str = ""
) -> ToolQuarantined:
    now_ms = int(time.time() * 1000)
    if since_ms > now_ms:
        raise QuarantineError(f"--since is in the future ({since_ms} > now {now_ms}): nothing can be exposed yet")
    if not reason.strip():
        raise QuarantineError("a quarantine needs a reason: it is shown on every run it flags")
    quarantine_id = quarantine_id or f"{tool}-{now_ms}"
    await admin.switch_tool(settings, owner, tool, disabled=True, reason=f"quarantined ({quarantine_id}): {reason}",
                            by=by)  # fmt: skip
    exposures = await find_exposures(settings, owner, tool, since_ms)
    live = [e for e in exposures if not e.ended]
    for exposure in live:
        await set_kill_switch(settings, "run", exposure.run_id, engaged=True,
                              reason=f"quarantine {quarantine_id}: consumed {tool} output", set_by=by)  # fmt: skip
    client = JournalClient(settings)
    try:
        for exposure in exposures:
            await client.append(flag_event(exposure, quarantine_id, owner, tool, reason))
    finally:
        await client.aclose()
    record = ToolQuarantined(
        event_id=quarantine_key(quarantine_id), quarantine_id=quarantine_id, owner=owner, tool=tool,
        since_ms=since_ms, reason=reason, halted_runs=[e.run_id for e in live],
        flagged_runs=[e.run_id for e in exposures if e.ended], released=False, set_by=by, set_ms=now_ms,
    )  # fmt: skip
    await put_record(settings, load_topics(settings.topic_prefix)[CONTROL].name, record)
    return record


async def release_quarantine(settings: Settings, quarantine_id: str, *, by: str, enable_tool: bool) -> ToolQuarantined:
    """Lifts the quarantine's run kill switches (its halted runs may be resumed); the flags stay in
    the journals as history. The tool stays disabled unless `enable_tool`."""
    held = (await read_quarantines(settings)).get(quarantine_id)
    if held is None:
        raise QuarantineError(f"no quarantine {quarantine_id!r} (agentstream quarantine list shows them)")
    if held.released:
        raise QuarantineError(f"quarantine {quarantine_id!r} was already released by {held.set_by}")
    for run_id in held.halted_runs:
        await set_kill_switch(settings, "run", run_id, engaged=False,
                              reason=f"quarantine {quarantine_id} released", set_by=by)  # fmt: skip
    if enable_tool:
        await admin.switch_tool(settings, held.owner, held.tool, disabled=False,
                                reason=f"quarantine {quarantine_id} released", by=by)  # fmt: skip
    record = ToolQuarantined(
        event_id=held.event_id, quarantine_id=held.quarantine_id, owner=held.owner, tool=held.tool,
        since_ms=held.since_ms, reason=held.reason, halted_runs=list(held.halted_runs),
        flagged_runs=list(held.flagged_runs), released=True, set_by=by, set_ms=int(time.time() * 1000),
    )  # fmt: skip
    await put_record(settings, load_topics(settings.topic_prefix)[CONTROL].name, record)
    return record
