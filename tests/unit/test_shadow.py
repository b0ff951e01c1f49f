"""Orchestrator versions and shadow replay, pure: runs recorded by the real orchestrator core over
a real partition store, re-driven against candidates; and a run's version pin across a restart."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from agentstream import ids
from agentstream.cli.args import since_ms
from agentstream.events import (
    EVENT_TYPES,
    LlmCallCompleted,
    RunEvent,
    RunFailed,
    RunRequested,
    RunStarted,
    ToolCallCompleted,
    ToolCallRequested,
)
from agentstream.kafka.state import PartitionStore
from agentstream.processors.orchestrator.core import OrchestratorCore
from agentstream.processors.orchestrator.decide import OrchestratorConfig
from agentstream.processors.orchestrator.versions import (
    V1,
    OrchestratorVersion,
    UnknownVersionError,
    VersionConflictError,
    VersionLoadError,
    VersionRegistry,
    build_registry,
    load_version,
)
from agentstream.registry.entry import TenantPolicy, ToolEntry
from agentstream.tools.replay import replay_events
from agentstream.tools.shadow import shadow_run
from agentstream.tools.shadow_batch import render_table, report_json
from agentstream.tools.shadow_read import RecordedRun, Selection, select

SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
TOOLS = {n: ToolEntry(n, n, SCHEMA, "read_only", {"kind": "builtin"}) for n in ("lookup", "search")}


def _to_search(tool: str, arguments: str) -> tuple[str, str] | None:
    return ("search", arguments) if tool == "lookup" else None


def _explode(tool: str, arguments: str) -> tuple[str, str] | None:
    raise RuntimeError("candidate bug")


# The tenant's policies of the day, pinned in RunStarted: a replay must start the run alike.
POLICY = TenantPolicy(on_repeated_denial="halt", eval_json='{"constants": ["kafka"]}')
ROUTED = OrchestratorVersion("routed", tool_rules=(_to_search,))
CRASHY = OrchestratorVersion("crashy", tool_rules=(_explode,))
STRICT = OrchestratorVersion("strict", OrchestratorConfig(max_invalid_streak=1))


class Recorder:
    """The orchestrator core over a real partition store, every decided event journaled at once;
    the model's outputs and the tools' results are what the test feeds."""

    def __init__(self, path: Path, registry: VersionRegistry, run: str = "run_a") -> None:
        self.store, self.run, self.journal = PartitionStore(path), run, list[RunEvent]()
        self.core = OrchestratorCore(lambda _t: TOOLS, policy_for=lambda _t: POLICY, versions=registry)
        self.feed(RunRequested(ids.run_requested_id(run), run, "t", "look up kafka", "m", [], 5, run))

    def feed(self, event: RunEvent) -> list[RunEvent]:
        out, pending = [], [event]
        while pending:
            e = pending.pop(0)
            self.journal.append(e)
            emitted = self.core.apply(self.store, e, live=True).emit
            out += emitted
            pending += [x for x in emitted if isinstance(x, RunEvent)]
        return out

    def model(self, step: int, text: str, calls: list[tuple[str, str]]) -> list[RunEvent]:
        call_id = ids.llm_call_id(self.run, step)
        tc = [{"id": f"c{step}_{i}", "name": n, "arguments_json": a} for i, (n, a) in enumerate(calls)]
        return self.feed(LlmCallCompleted(
            ids.completed_event_id(call_id), self.run, "t", step, call_id, "scripted", "m", text,
            orjson.dumps(tc).decode(), "tool_calls" if calls else "stop", 10, 5, 0, 1.0, 1,
        ))  # fmt: skip

    def tool(self, request: ToolCallRequested, content: str) -> list[RunEvent]:
        return self.feed(ToolCallCompleted(
            ids.completed_event_id(request.call_id), self.run, "t", request.step, request.call_id, request.tool,
            request.idempotency_key, content, False, 1.0,
        ))  # fmt: skip

    def two_steps(self) -> list[RunEvent]:
        """lookup at step 1, then the answer at step 2."""
        (request,) = [e for e in self.model(1, "", [("lookup", '{"q": "kafka"}')]) if isinstance(e, ToolCallRequested)]
        self.tool(request, "kafka is a log")
        self.model(2, "kafka is a log", [])
        return self.journal


def registry(default: str = "v1") -> VersionRegistry:
    return VersionRegistry([V1, ROUTED, CRASHY, STRICT], default)


def recorded(tmp_path: Path, default: str = "v1") -> list[RunEvent]:
    return Recorder(tmp_path / "p0", registry(default)).two_steps()


def test_a_run_replayed_against_its_own_version_is_identical(tmp_path: Path) -> None:
    journal = recorded(tmp_path)
    (started,) = [e for e in journal if isinstance(e, RunStarted)]
    assert started.orchestrator_version == "v1" and started.on_repeated_denial == "halt" and started.eval_json
    report = shadow_run("run_a", journal, V1)
    assert report.status == "identical" and report.divergence is None, report.divergence
    assert report.decisions_matched == 5 and report.tools_used == ["lookup"]  # started, 2 model, 1 tool, done
    assert replay_events(journal).deterministic


def test_the_first_divergence_is_located_with_what_differs(tmp_path: Path) -> None:
    report = shadow_run("run_a", recorded(tmp_path), ROUTED)
    d = report.divergence
    assert report.status == "diverged" and report.tool_choice_changed and d is not None
    assert (d.kind, d.step, d.event, d.recorded_tool, d.candidate_tool) == (
        "differs", 1, "ToolCallRequested", "lookup", "search",
    )  # fmt: skip
    assert "tool: recorded 'lookup' vs candidate 'search'" in d.detail
    assert report.decisions_matched == 2  # RunStarted (its version apart) and the first model call


def test_a_candidate_that_raises_is_that_runs_report(tmp_path: Path) -> None:
    report = shadow_run("run_a", recorded(tmp_path), CRASHY)
    assert report.status == "unreplayable" and report.divergence is not None
    assert report.divergence.kind == "candidate_error" and "RuntimeError: candidate bug" in report.divergence.detail


def test_records_of_an_unknown_future_schema_make_the_run_unreplayable(tmp_path: Path) -> None:
    report = shadow_run("run_a", recorded(tmp_path), V1, ["partition 0 offset 7 (RunStarted): unknown fingerprint"])
    assert report.status == "unreplayable" and report.divergence is not None
    assert report.divergence.kind == "undecodable" and "unknown fingerprint" in report.divergence.detail


def test_a_journal_whose_beginning_was_deleted_is_reported_as_truncated(tmp_path: Path) -> None:
    journal = recorded(tmp_path)
    report = shadow_run("run_a", journal[3:], V1)
    assert report.status == "unreplayable" and report.divergence is not None
    assert report.divergence.kind == "truncated" and "beginning was deleted" in report.divergence.detail


def test_a_request_the_journal_cannot_answer_is_a_divergence_not_a_call(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "p0", registry("strict"))
    rec.model(1, "", [("nope", "{}")])  # an invalid call: under "strict" the run ends there
    assert isinstance(rec.journal[-1], RunFailed)
    report = shadow_run("run_a", rec.journal, replace(STRICT, name="v1", config=OrchestratorConfig()))
    d = report.divergence
    assert d is not None and (d.kind, d.event, d.step) == ("unanswerable", "LlmCallRequested", 2)
    assert "not made" in d.detail
    # A recording that has not ended yet: the candidate's next move is no divergence.
    assert shadow_run("run_a", rec.journal[:-1], V1).status == "identical"


def test_step_check_verdicts_are_compared_apart_from_the_trajectory(tmp_path: Path) -> None:
    verdict_type: Any = EVENT_TYPES.get("EvalVerdict")  # by name: the checks may not be in this version
    if verdict_type is None:
        pytest.skip("no EvalVerdict event in this version")
    full = recorded(tmp_path)
    journal = [e for e in full if e.type_name != "EvalVerdict"]
    # What the orchestrator judged while recording, the candidate judges again: new if unrecorded.
    again = shadow_run("run_a", journal, V1)
    judged = sorted(f"{e.check_name}@{e.step}" for e in full if e.type_name == "EvalVerdict")  # type: ignore[attr-defined]
    assert again.status == "identical" and again.new_check_failures == judged
    fake = verdict_type(
        f"{ids.step_prefix('run_a', 1)}/eval/99", "run_a", "t", 1, "grounding", "warning", "r", "{}", "1"
    )
    report = shadow_run("run_a", [*full[:4], fake, *full[4:]], V1)
    assert report.status == "identical" and report.gone_check_failures == ["grounding@1"]


def test_the_batch_report_counts_tool_choice_changes_per_tool_and_step(tmp_path: Path) -> None:
    journal = recorded(tmp_path)
    reports = [shadow_run("run_a", journal, ROUTED), shadow_run("run_b", journal[2:], ROUTED)]
    report = report_json(reports, "routed", 0.5)
    s = report["summary"]
    assert (s["runs"], s["diverged"], s["unreplayable"], s["share_changed"]) == (2, 1, 1, 1.0)
    assert s["by_tool"]["lookup"]["changed"] == 1 and s["by_step"] == {"1": 1}
    assert "diverged" in render_table(report) and orjson.loads(orjson.dumps(report)) == report


def test_a_run_keeps_its_pinned_version_after_the_default_changes(tmp_path: Path) -> None:
    old = Recorder(tmp_path / "p0", registry("v1"))
    # A restart with another default, over the same state: the started run still decides with v1.
    old.core = OrchestratorCore(lambda _t: TOOLS, versions=registry("routed"))
    assert old.core.resume(old.store).emit == []  # its model call was already asked for
    (request,) = [e for e in old.model(1, "", [("lookup", '{"q": "x"}')]) if isinstance(e, ToolCallRequested)]
    assert request.tool == "lookup"
    new = Recorder(tmp_path / "p1", registry("routed"), run="run_b")
    assert next(e for e in new.journal if isinstance(e, RunStarted)).orchestrator_version == "routed"
    (request,) = [e for e in new.model(1, "", [("lookup", '{"q": "x"}')]) if isinstance(e, ToolCallRequested)]
    assert request.tool == "search"


def test_a_run_pinned_to_a_version_this_process_lacks_fails_with_the_reason(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "p0", registry("routed"))
    rec.core = OrchestratorCore(lambda _t: TOOLS, versions=VersionRegistry([V1]))
    (failed,) = rec.model(1, "", [("lookup", '{"q": "x"}')])
    assert isinstance(failed, RunFailed) and failed.error_type == "unknown_version"
    assert "unknown orchestrator version 'routed'" in failed.reason


def test_versions_are_immutable_and_loaded_by_module_attribute() -> None:
    with pytest.raises(VersionConflictError, match="never changes"):
        VersionRegistry([V1, replace(V1, description="changed")])
    with pytest.raises(UnknownVersionError, match="'nope'"):
        build_registry("nope")
    assert load_version("tests.unit.test_shadow:ROUTED") is ROUTED
    assert build_registry("routed", ["tests.unit.test_shadow:ROUTED"]).default == "routed"
    for bad, why in (("nocolon", "module:attribute"), ("no_such_mod:X", "cannot import"),
                     ("tests.unit.test_shadow:SCHEMA", "not an OrchestratorVersion")):  # fmt: skip
        with pytest.raises(VersionLoadError, match=why):
            load_version(bad)


def test_the_selection_of_recorded_runs() -> None:
    now = 1_800_000_000_000
    assert since_ms("30m", now) == now - 1_800_000 and since_ms("2026-12-07T00:00:00Z") == 1_796_601_600_000
    assert since_ms("2026-12-07T01:00:00+01:00") == since_ms("2026-12-07T00:00:00")  # no zone: UTC
    with pytest.raises(argparse.ArgumentTypeError, match="span ago"):
        since_ms("yesterday")
    start: RunEvent = RunRequested(ids.run_requested_id("r"), "r", "acme", "task", "m", [], 5, "k")
    runs = {
        f"r{i}": RecordedRun(f"r{i}", [replace(start, run_id=f"r{i}", tenant_id=t)], first_ms=ms)
        for i, (t, ms) in enumerate([("acme", 30), ("globex", 10), ("acme", 20)])
    }
    runs["cut"] = RecordedRun("cut", [replace(start, run_id="cut")][1:], first_ms=40)  # its start is not read
    assert [r.run_id for r in select(runs, Selection())] == ["r1", "r2", "r0", "cut"]
    assert [r.run_id for r in select(runs, Selection(runs=2, tenant="acme"))] == ["r2", "r0"]
    assert [r.run_id for r in select(runs, Selection(since_ms=15))] == ["r2", "r0"]
