"""A flagged run's failure signature, and runs clustered by it: pure.

The signature is what failed (each failed step check with its severity, loops, flags, how the run
failed or halted) and the tools at the steps where it failed. The step pattern (the run's tool
sequence, repeats collapsed) is not part of it, or every run would be its own cluster: each
cluster reports its commonest patterns instead."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from agentstream.events import EvalVerdict, LoopDetected, RunEvent, RunFailed, RunFlagged, RunHalted, ToolCallRequested

PATTERN_STEPS = 8


@dataclass(frozen=True, slots=True, order=True)
class Signature:
    failures: tuple[str, ...]
    tools: tuple[str, ...]

    @property
    def text(self) -> str:
        return f"{' + '.join(self.failures)} @ {', '.join(self.tools) or '-'}"


@dataclass
class Cluster:
    signature: Signature
    runs: list[str] = field(default_factory=list)
    tenants: set[str] = field(default_factory=set)
    patterns: Counter[str] = field(default_factory=Counter)

    def describe(self, flagged: int, examples: int = 3) -> dict[str, object]:
        return {
            "signature": self.signature.text,
            "failures": list(self.signature.failures),
            "tools": list(self.signature.tools),
            "runs": len(self.runs),
            "share_of_flagged": round(len(self.runs) / flagged, 4) if flagged else 0.0,
            "tenants": len(self.tenants),
            "patterns": [p for p, _ in self.patterns.most_common(3)],
            "examples": self.runs[:examples],
        }


def step_pattern(events: Sequence[RunEvent]) -> str:
    tools: list[str] = []
    for event in events:
        if isinstance(event, ToolCallRequested):
            if tools and tools[-1].rstrip("+") == event.tool:
                tools[-1] = event.tool + "+"
            else:
                tools.append(event.tool)
    shown = tools[:PATTERN_STEPS]
    return ">".join(shown) + (">..." if len(tools) > PATTERN_STEPS else "") if shown else "(no tools)"


def signature_of(events: Sequence[RunEvent]) -> Signature | None:
    """None for a run nothing flagged."""
    failures: set[str] = set()
    steps: set[int] = set()
    for event in events:
        if isinstance(event, EvalVerdict):
            failures.add(f"{event.check_name}:{event.severity}")
            steps.add(event.step)
        elif isinstance(event, LoopDetected):
            failures.add(f"loop:{event.kind}")
            steps.add(event.step)
        elif isinstance(event, RunFlagged):
            failures.add(f"flag:{event.kind}")
            steps.add(event.step)
        elif isinstance(event, RunFailed):
            failures.add(f"failed:{event.error_type}")
        elif isinstance(event, RunHalted) and event.limit in ("loop", "repeated_denial", "kill_switch"):
            failures.add(f"halted:{event.limit}")
    if not failures:
        return None
    tools = {e.tool for e in events if isinstance(e, ToolCallRequested) and e.step in steps}
    return Signature(tuple(sorted(failures)), tuple(sorted(tools)))


def cluster_runs(runs: Mapping[str, Sequence[RunEvent]]) -> tuple[list[Cluster], int]:
    """Clusters of the flagged runs, largest first (ties by signature), and how many were flagged."""
    clusters: dict[Signature, Cluster] = {}
    flagged = 0
    for run_id in sorted(runs):
        events = runs[run_id]
        signature = signature_of(events)
        if signature is None:
            continue
        flagged += 1
        cluster = clusters.setdefault(signature, Cluster(signature))
        cluster.runs.append(run_id)
        cluster.tenants.add(events[0].tenant_id if events else "")
        cluster.patterns[step_pattern(events)] += 1
    return sorted(clusters.values(), key=lambda c: (-len(c.runs), c.signature)), flagged
