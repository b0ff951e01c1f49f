"""Shadow replay of many runs: each recorded run against the candidate (one run's bad input is
that run's report, never the batch's end), the aggregate figures, and the report as JSON (the
file the console shows) and as a terminal table."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from agentstream.processors.orchestrator.versions import OrchestratorVersion
from agentstream.tools.shadow import RunReport, shadow_run
from agentstream.tools.shadow_read import RecordedRun

FORMAT = "agentstream.shadow/1"  # the report file's format, for the console and later readers


def replay_all(runs: Iterable[RecordedRun], candidate: OrchestratorVersion) -> list[RunReport]:
    return [shadow_run(r.run_id, r.events, candidate, r.undecodable) for r in runs]


def summarize(reports: list[RunReport], candidate: str, seconds: float) -> dict[str, Any]:
    """The aggregates. Shares are of the runs replayed to an answer (identical or diverged): a run
    that could not be replayed says nothing about the candidate and is counted apart."""
    status = Counter(r.status for r in reports)
    kinds = Counter(r.divergence.kind for r in reports if r.divergence is not None)
    replayed = status["identical"] + status["diverged"]
    changed = [r for r in reports if r.tool_choice_changed]
    by_tool: dict[str, dict[str, Any]] = defaultdict(lambda: {"runs": 0, "changed": 0})
    for r in reports:
        if r.status != "unreplayable":
            for tool in r.tools_used:
                by_tool[tool]["runs"] += 1
    by_step: Counter[int] = Counter()
    for r in changed:
        assert r.divergence is not None
        by_step[r.divergence.step] += 1
        # The tool whose choice changed: the recorded call's, or the candidate's where the
        # recording asked for no tool there.
        tool = r.divergence.recorded_tool or r.divergence.candidate_tool
        by_tool[tool]["changed"] += 1
        by_tool[tool].setdefault("candidate_calls", Counter())[r.divergence.candidate_tool or "(none)"] += 1
    for row in by_tool.values():
        row["share_changed"] = _share(row["changed"], row["runs"])
        if "candidate_calls" in row:
            row["candidate_calls"] = dict(row["candidate_calls"])
    new_checks = Counter(k.split("@")[0] for r in reports for k in r.new_check_failures)
    gone_checks = Counter(k.split("@")[0] for r in reports for k in r.gone_check_failures)
    return {
        "candidate": candidate,
        "runs": len(reports),
        "replayed": replayed,
        "identical": status["identical"],
        "diverged": status["diverged"],
        "unreplayable": status["unreplayable"],
        "by_kind": dict(sorted(kinds.items())),
        "tool_choice_changed": len(changed),
        "share_changed": _share(len(changed), replayed),
        "by_tool": {k: by_tool[k] for k in sorted(by_tool)},
        "by_step": {str(k): v for k, v in sorted(by_step.items())},
        "new_check_failures": dict(sorted(new_checks.items())),
        "gone_check_failures": dict(sorted(gone_checks.items())),
        "runs_with_new_check_failures": sum(1 for r in reports if r.new_check_failures),
        "seconds": round(seconds, 3),
        "journals_per_min": round(len(reports) / seconds * 60) if seconds > 0 else None,
    }


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def run_json(r: RunReport) -> dict[str, Any]:
    return {
        "run_id": r.run_id,
        "tenant_id": r.tenant_id,
        "status": r.status,
        "events": r.events,
        "decisions_matched": r.decisions_matched,
        "divergence": asdict(r.divergence) if r.divergence is not None else None,
        "tool_choice_changed": r.tool_choice_changed,
        "tools_used": r.tools_used,
        "new_check_failures": r.new_check_failures,
        "gone_check_failures": r.gone_check_failures,
    }


def report_json(reports: list[RunReport], candidate: str, seconds: float) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "created_ms": int(time.time() * 1000),
        "summary": summarize(reports, candidate, seconds),
        "runs": [run_json(r) for r in reports],
    }


def render_table(report: dict[str, Any], limit: int = 40) -> str:
    s = report["summary"]
    lines = [
        f"shadow replay against {s['candidate']}: {s['runs']} runs, {s['identical']} identical, "
        f"{s['diverged']} diverged, {s['unreplayable']} not replayable ({s['journals_per_min']} journals/min)",
        f"tool choices changed in {s['tool_choice_changed']} of {s['replayed']} replayed runs "
        f"({s['share_changed']:.2%})",
    ]
    if s["by_tool"]:
        lines += ["", f"{'tool':<28} {'runs':>6} {'changed':>8} {'share':>8}"]
        for tool, row in s["by_tool"].items():
            lines.append(f"{tool:<28} {row['runs']:>6} {row['changed']:>8} {row['share_changed']:>8.2%}")
    if s["by_step"]:
        lines += ["", "first tool-choice change by step: " + ", ".join(f"{k}: {v}" for k, v in s["by_step"].items())]
    if s["new_check_failures"] or s["gone_check_failures"]:
        lines += ["", f"new step-check failures: {s['new_check_failures'] or 'none'}; "
                      f"no longer failing: {s['gone_check_failures'] or 'none'}"]  # fmt: skip
    odd = [r for r in report["runs"] if r["status"] != "identical"]
    if odd:
        lines += ["", f"{'run':<26} {'status':<13} {'step':>4}  where / why"]
        for r in odd[:limit]:
            d = r["divergence"]
            lines.append(
                f"{r['run_id']:<26} {r['status']:<13} {d['step']:>4}  {d['kind']} {d['event']}: {d['detail'][:90]}"
            )
        if len(odd) > limit:
            lines.append(f"... {len(odd) - limit} more in the JSON report")
    return "\n".join(lines)
