"""Failure-mode mining's pure half: signatures, clusters, and regression case files."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentstream.events import (
    LoopDetected,
    RunCompleted,
    RunEvent,
    RunFailed,
    RunFlagged,
    RunStarted,
    ToolCallRequested,
)
from agentstream.mining.cases import CaseFileError, export_cases, load_cases, write_cases
from agentstream.mining.signature import cluster_runs, signature_of, step_pattern


def calls(run: str, *tools: str, tenant: str = "acme") -> list[RunEvent]:
    return [ToolCallRequested(f"{run}/t{i}", run, tenant, i, f"{run}/c{i}", "tc", t, "{}", "k", 1000)
            for i, t in enumerate(tools)]  # fmt: skip


def looped(run: str, tenant: str = "acme") -> list[RunEvent]:
    return [
        RunStarted(f"{run}/s", run, tenant, "m", "[]", 10, ""),
        *calls(run, "lookup", "pay", "pay", "pay", tenant=tenant),
        LoopDetected(f"{run}/loop", run, tenant, 3, "tool_call", "warn", "sig", 3, 5, "{}"),
        RunCompleted(f"{run}/end", run, tenant, 4, "paid", "done"),
    ]


def test_a_clean_run_has_no_signature_and_a_flagged_one_names_what_failed_where() -> None:
    clean = [
        RunStarted("c/s", "c", "acme", "m", "[]", 10, ""),
        *calls("c", "lookup"),
        RunCompleted("c/e", "c", "acme", 1, "x", "done"),
    ]
    assert signature_of(clean) is None
    sig = signature_of(looped("r"))
    assert sig is not None and sig.failures == ("loop:tool_call",) and sig.tools == ("pay",)
    assert sig.text == "loop:tool_call @ pay"
    failed = [*calls("f", "search"), RunFailed("f/x", "f", "acme", 1, "llm_error", "gave up")]
    assert signature_of(failed) is not None and signature_of(failed).failures == ("failed:llm_error",)  # type: ignore[union-attr]


def test_the_step_pattern_collapses_repeats_and_is_bounded() -> None:
    assert step_pattern(looped("r")) == "lookup>pay+"
    assert step_pattern(calls("r", *[f"t{i}" for i in range(12)])).endswith(">...")
    assert step_pattern([]) == "(no tools)"


def test_runs_cluster_by_signature_largest_first_with_examples() -> None:
    runs: dict[str, list[RunEvent]] = {f"loop{i}": looped(f"loop{i}", tenant=f"t{i % 2}") for i in range(3)}
    runs["flag"] = [
        *calls("flag", "email"),
        RunFlagged("flag/f", "flag", "acme", 0, "repeated_denial", "x", "s", 3, "{}"),
    ]
    runs["clean"] = [*calls("clean", "lookup"), RunCompleted("clean/e", "clean", "acme", 1, "x", "done")]
    clusters, flagged = cluster_runs(runs)
    assert flagged == 4 and [len(c.runs) for c in clusters] == [3, 1]
    top = clusters[0].describe(flagged)
    assert top["runs"] == 3 and top["share_of_flagged"] == 0.75 and top["tenants"] == 2
    assert top["patterns"] == ["lookup>pay+"] and top["examples"] == ["loop0", "loop1", "loop2"]


def test_a_cluster_exports_to_cases_that_load_back_event_for_event(tmp_path: Path) -> None:
    runs = {f"r{i}": looped(f"r{i}") for i in range(2)}
    clusters, _ = cluster_runs(runs)
    path = tmp_path / "cases.json"
    write_cases(path, export_cases(clusters[0], runs))
    cases = load_cases(path)
    assert [c.run_id for c in cases] == ["r0", "r1"]
    assert all(c.events == runs[c.run_id] and c.signature == "loop:tool_call @ pay" for c in cases)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{nope", "not a readable JSON"),
        (b'{"format": "other", "cases": []}', "not a regression case file"),
        (b'{"format": "agentstream.regression-cases.v1", "cases": [{"run_id": "r"}]}', "case 0: KeyError"),
        (
            b'{"format": "agentstream.regression-cases.v1", "cases": [{"run_id": "r", "signature": "s", "events": ["!!"]}]}',
            "case 0",
        ),
        (
            b'{"format": "agentstream.regression-cases.v1", "cases": [{"run_id": "r", "signature": "s", "events": ["AAAA"]}]}',
            "case 0",
        ),
    ],
)
def test_a_bad_case_file_is_refused_saying_where(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(CaseFileError, match=message):
        load_cases(path)


def test_a_case_holding_another_runs_event_is_refused(tmp_path: Path) -> None:
    runs = {"r0": looped("r0")}
    clusters, _ = cluster_runs(runs)
    doc = export_cases(clusters[0], {"r0": [*looped("r0"), *calls("other", "x")]})
    path = tmp_path / "mixed.json"
    write_cases(path, doc)
    with pytest.raises(CaseFileError, match="not of run r0"):
        load_cases(path)
