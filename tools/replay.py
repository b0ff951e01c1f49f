"""Deterministic replay: re-drive the current orchestrator over a recorded journal, with every
model output, tool result and human input pinned to what was recorded, and diff its decisions
against the recorded ones. Any difference means the orchestrator is not the one that produced the
run (a changed prompt, step cap or code path), which is what a shadow test must catch."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from agentstream.config import Settings
from agentstream.events import RunEvent, RunStarted
from agentstream.processors.orchestrator.decide import OrchestratorConfig
from agentstream.processors.orchestrator.versions import (
    BUILTIN,
    UnknownVersionError,
    VersionRegistry,
)
from agentstream.tools.shadow import shadow_run


@dataclass
class ReplayResult:
    run_id: str
    events: int = 0
    decisions_matched: int = 0
    divergences: list[str] = field(default_factory=list)

    @property
    def deterministic(self) -> bool:
        return not self.divergences


def replay_events(
    events: list[RunEvent], config: OrchestratorConfig | None = None, registry: VersionRegistry | None = None
) -> ReplayResult:
    """Re-drives the version the run pinned (in `registry`, the built-in ones by default); with
    `config`, that version's rules with another config (what a changed setting would have done)."""
    run_id = events[0].run_id if events else ""
    started = next((e for e in events if isinstance(e, RunStarted)), None)
    pinned = started.orchestrator_version if started else ""
    try:
        version = (registry or VersionRegistry(BUILTIN)).get(pinned)
    except UnknownVersionError as exc:
        return ReplayResult(run_id, len(events), 0, [f"cannot replay: the run pinned {exc}"])
    if config is not None:
        version = replace(version, config=config)
    report = shadow_run(run_id, events, version)
    found = [report.divergence.describe()] if report.divergence is not None else []
    return ReplayResult(run_id, report.events, report.decisions_matched, found)


async def replay_command(settings: Settings, run_id: str) -> int:
    from agentstream.client.journal import read_run_once

    entries = await read_run_once(settings, run_id)
    if not entries:
        print(f"no run {run_id} in the journal")
        return 1
    from agentstream.processors.orchestrator.versions import build_registry
    from agentstream.settings import OrchestratorSettings, load

    chosen = load(OrchestratorSettings)  # the versions this deployment's orchestrator knows
    result = replay_events([e.event for e in entries], registry=build_registry(chosen.version, chosen.versions))
    print(f"replayed {result.events} events of {run_id}: {result.decisions_matched} decisions matched, "
          f"{len(result.divergences)} divergences")  # fmt: skip
    for d in result.divergences:
        print(f"  DIVERGED {d}")
    print("trajectory identical" if result.deterministic else "trajectory differs")
    return 0 if result.deterministic else 1
