"""The regression cases mined from flagged runs (tests/regression/*.json, written by
`bench/eval.py --export-cases` or `agentstream mine --export`): each recorded journal must replay
identically through the current orchestrator, its step checks included, and still carry the
failure signature it was mined for. A change that silently stops flagging a known failure mode,
or decides such a run differently, fails here."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from agentstream.mining.cases import Case, load_cases
from agentstream.mining.signature import signature_of
from agentstream.processors.orchestrator.versions import V1
from agentstream.tools.shadow import shadow_run

FILES = sorted((Path(__file__).parents[1] / "regression").glob("*.json"))
CASES: list[tuple[str, Case]] = [(f"{path.stem}:{case.run_id}", case) for path in FILES for case in load_cases(path)]


def test_there_are_cases_for_several_failure_signatures() -> None:
    assert len({case.signature for _, case in CASES}) >= 5, [case.signature for _, case in CASES]


@pytest.mark.parametrize("case", [case for _, case in CASES], ids=[name for name, _ in CASES])
def test_a_mined_case_replays_identically_and_keeps_its_failure_signature(case: Case) -> None:
    report = shadow_run(case.run_id, case.events, V1)
    assert report.divergence is None, report.divergence.describe() if report.divergence else ""
    # The checks still find what they found when the case was mined, and nothing more.
    assert report.new_check_failures == [] and report.gone_check_failures == [], report
    signature = signature_of(case.events)
    assert signature is not None and signature.text == case.signature


async def test_shadow_replays_a_case_file_without_a_broker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agentstream.tools.shadow_cli import shadow_command

    def args(candidate: str, cases: Path) -> argparse.Namespace:
        return argparse.Namespace(candidate=candidate, cases=cases, runs=None, since=None, tenant=None, json=False,
                                  out=tmp_path / "report.json")  # fmt: skip

    assert await shadow_command(args("v1", FILES[0])) == 0
    assert f"{len(load_cases(FILES[0]))} identical" in capsys.readouterr().out
    assert await shadow_command(args("agentstream.doubles.canary:REGRESSED", FILES[0])) == 1  # it changes calls
    (tmp_path / "bad.json").write_text("{}")
    assert await shadow_command(args("v1", tmp_path / "bad.json")) == 2
