"""The CLI's answers to a new user's mistakes, where no broker is needed: a budget or step count the
API would refuse is refused at parsing, naming the flag; `costs --by model` lines add up to the
total; a tiers file that does not match the server is refused before anything is registered; a
halted run counts as settled for a follower. (With a stack: test_cli_edges_stack.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from agentstream.cli.costs import _print
from agentstream.cli.main import parser
from agentstream.cli.tools import apply_tiers, read_tiers
from agentstream.client.journal import waiting_halt
from agentstream.costs import RunCost, group_costs
from agentstream.events import CancelRequested, ResumeRequested, RunHalted, RunStarted
from agentstream.registry.admin import RegistryError
from agentstream.registry.entry import ToolEntry


@pytest.mark.parametrize(
    ("argv", "flag", "why"),
    [
        (["run", "t", "--budget-usd", "-1"], "--budget-usd", "between 0 and 1000000"),
        (["run", "t", "--budget-tokens", "-5"], "--budget-tokens", "between 0 and 10000000000"),
        (["run", "t", "--budget-tokens", "1.5"], "--budget-tokens", "not a whole number"),
        (["run", "t", "--budget-wall-s", "inf"], "--budget-wall-s", "between 0 and 2592000"),
        (["run", "t", "--max-steps", "0"], "--max-steps", "between 1 and 100"),
        (["run", "t", "--max-steps", "101"], "--max-steps", "between 1 and 100"),
        (["runs", "resume", "r", "--add-usd", "nan"], "--add-usd", "between 0 and 1000000"),
        (["runs", "resume", "r", "--add-steps", "-1"], "--add-steps", "between 0 and 100"),
        (["runs", "resume", "r", "--add-tokens", "many"], "--add-tokens", "'many' is not a whole number"),
    ],
)
def test_a_budget_or_step_count_the_api_refuses_is_refused_naming_the_flag(
    argv: list[str], flag: str, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parser().parse_args(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: must be" in err or f"argument {flag}: '" in err, err
    assert why in err, err


def test_valid_budgets_parse_as_numbers_and_the_follow_exit_codes_are_documented(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = parser().parse_args(["run", "t", "--budget-usd", "0.5", "--budget-tokens", "0", "--max-steps", "100"])
    assert (args.budget_usd, args.budget_tokens, args.max_steps) == (0.5, 0, 100)
    assert isinstance(args.budget_tokens, int) and isinstance(args.max_steps, int)
    with pytest.raises(SystemExit):
        parser().parse_args(["run", "--help"])
    run_help = capsys.readouterr().out
    assert "3 it halted" in " ".join(run_help.split())


def _cost(run: str, model_usd: float, tool_usd: float) -> RunCost:
    return RunCost(run, "t", usd=model_usd + tool_usd, model_calls=1, tool_calls=1, by_model={"scripted": model_usd},
                   by_tool={"transfer_funds": tool_usd}, calls_by={"model:scripted": 1, "tool:transfer_funds": 1})  # fmt: skip


@pytest.mark.parametrize("group_by", ["model", "tool", "run"])
def test_costs_rows_add_up_to_the_total_printed(group_by: str, capsys: pytest.CaptureFixture[str]) -> None:
    costs = [_cost("run_a", 0.002, 0.0005), _cost("run_b", 0.001, 0.00025)]
    total = round(sum(c.usd for c in costs), 9)
    _print({"group_by": group_by, "total_usd": total, "data": group_costs(costs, group_by)}, False)
    lines = capsys.readouterr().out.splitlines()[1:]
    figures = [float(line[40:55]) for line in lines]
    assert lines[-1].startswith("total") and figures[-1] == pytest.approx(total)
    assert sum(figures[:-1]) == pytest.approx(total, abs=2e-6), lines
    if group_by == "model":
        assert lines[-2].startswith("(tool calls, no model)") and figures[-2] == pytest.approx(0.00075)


def _draft(name: str) -> ToolEntry:
    return ToolEntry(name, "", {"type": "object"}, "irreversible", {"kind": "stdio", "command": "srv"})


def test_a_tiers_file_gives_each_tool_its_tier_and_scopes(tmp_path: Path) -> None:
    path = tmp_path / "tiers.yaml"
    path.write_text("git_status: read_only\ngit_commit: {tier: irreversible, scopes: [repo:write], timeout_s: 5}\n")
    tiers = read_tiers(str(path))
    ready = apply_tiers([_draft("git_status"), _draft("git_commit"), _draft("git_log")], tiers, "read_only", "acme")
    by_name = {e.name: e for e in ready}
    assert by_name["git_status"].tier == "read_only" and by_name["git_log"].tier == "read_only"
    assert by_name["git_commit"].tier == "irreversible" and by_name["git_commit"].scopes == ("repo:write",)
    assert by_name["git_commit"].timeout_ms == 5000 and {e.owner for e in ready} == {"acme"}


@pytest.mark.parametrize(
    ("text", "default", "message"),
    [
        ("git_stauts: read_only\n", "read_only", "does not list: git_stauts"),
        ("git_status: read_only\n", None, "no tier for git_commit"),
        ("git_status: safe\n", None, "tier must be one of"),
        ("git_status: {tier: read_only, scope: [x]}\n", None, "unknown field(s) scope"),
        ("git_status: {tier: read_only, scopes: x}\n", None, "scopes must be a list"),
        ("- git_status\n", None, "expected a mapping"),
        ("git_status: [read_only\n", None, "--tiers"),
    ],
)
def test_a_tiers_file_that_does_not_fit_the_server_is_refused_whole(
    tmp_path: Path, text: str, default: str | None, message: str
) -> None:
    path = tmp_path / "tiers.yaml"
    path.write_text(text)
    with pytest.raises(RegistryError) as refused:
        apply_tiers([_draft("git_status"), _draft("git_commit")], read_tiers(str(path)), default, "")
    assert message in str(refused.value)


def test_a_follower_settles_at_a_halt_until_it_is_resumed_or_cancelled() -> None:
    started = RunStarted("r/started", "r", "t", "scripted", "[]", 20, "")
    halt1 = RunHalted("r/halt/1", "r", "t", 3, 1, "loop", "repeated", True)
    assert waiting_halt(None, started) is None
    assert waiting_halt(None, halt1) is halt1
    assert waiting_halt(halt1, started) is halt1  # anything else leaves it waiting
    assert waiting_halt(halt1, ResumeRequested("r/resume/0", "r", "t", 0, 5, "stale", "cli")) is halt1
    assert waiting_halt(halt1, ResumeRequested("r/resume/1", "r", "t", 1, 5, "more", "cli")) is None
    assert waiting_halt(halt1, CancelRequested("r/cancel", "r", "t", "enough", "cli")) is None
