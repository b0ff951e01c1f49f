"""The step checks inside the orchestrator's pure core: a failed check is journaled once as an
EvalVerdict, a clean step adds nothing, the verdicts are deterministic, and a check that raises
never stops the run."""

from __future__ import annotations

import orjson
import pytest

from agentstream import ids
from agentstream.evaluation import checks
from agentstream.events import EvalVerdict, RunEvent, RunRequested, RunStarted, ToolCallCompleted, ToolCallRequested
from agentstream.gateway.projection import RunView, _summarise
from agentstream.llm import ToolSpec
from agentstream.processors.orchestrator.decide import OrchestratorConfig, decide
from agentstream.processors.orchestrator.evolve import evolve
from agentstream.processors.orchestrator.state import RunState
from agentstream.tools.replay import replay_events
from agentstream.trajectory import describe
from tests.unit.test_orchestrator_core import RUN, completion

TOOLS = {
    "lookup_order": ToolSpec(
        "lookup_order", "an order", {"type": "object", "properties": {"order": {"type": "string"}}}
    ),
    "pay": ToolSpec(
        "pay",
        "pay",
        {"type": "object", "properties": {"to": {"type": "string"}, "cents": {"type": "integer"}}, "required": ["to"]},
    ),
}
POLICY = '{"requires": {"pay": ["lookup_*"]}}'
TASK = "Pay order ORD-4411 to ACCT-0042."


def result_of(request: ToolCallRequested, content: str, blob: str = "") -> ToolCallCompleted:
    key = ids.completed_event_id(request.call_id)
    return ToolCallCompleted(key, RUN, "t", request.step, request.call_id, request.tool, request.call_id, content, False, 1.0, blob)  # fmt: skip


class Run:
    """The orchestrator's fold without Kafka: each decided event is journaled and evolved at once."""

    def __init__(self, policy: str = POLICY) -> None:
        self.journal: list[RunEvent] = []
        self.state: RunState | None = None
        self.policy = policy
        self.feed(RunRequested(ids.run_requested_id(RUN), RUN, "t", TASK, "m", [], 10, "k"))

    def feed(self, event: RunEvent) -> list[RunEvent]:
        out: list[RunEvent] = []
        pending = [event]
        while pending:
            current = pending.pop(0)
            self.journal.append(current)
            self.state = evolve(current, self.state)
            assert self.state is not None
            known = {e.event_id for e in (*self.journal, *pending)}  # the core's in-flight suppression
            fresh = [e for e in decide(self.state, TOOLS, OrchestratorConfig(), eval_defaults=self.policy)
                     if e.event_id not in known]  # fmt: skip
            out += fresh
            pending += fresh
        return out

    def step(
        self, step: int, text: str, *calls: tuple[str, dict[str, object]], results: tuple[str, ...] = ()
    ) -> list[RunEvent]:
        out = self.feed(completion(step, text, [(name, orjson.dumps(args).decode()) for name, args in calls]))
        for request, result in zip([e for e in out if isinstance(e, ToolCallRequested)], results, strict=False):
            out += self.feed(result_of(request, result))
        return out

    def verdicts(self) -> list[EvalVerdict]:
        return [e for e in self.journal if isinstance(e, EvalVerdict)]


def test_the_policy_is_pinned_at_start() -> None:
    run = Run()
    [started] = [e for e in run.journal if isinstance(e, RunStarted)]
    assert started.eval_json == POLICY


def test_a_clean_run_journals_no_verdict() -> None:
    run = Run()
    run.step(1, "Looking it up with lookup_order.", ("lookup_order", {"order": "ORD-4411"}),
             results=("ORD-4411: 12,500 cents due",))  # fmt: skip
    run.step(2, "", ("pay", {"to": "ACCT-0042", "cents": 12500}), results=("paid: TX-981",))
    run.step(3, "Paid 12,500 cents for ORD-4411 to ACCT-0042 (TX-981).")
    assert run.verdicts() == []
    assert run.journal[-1].type_name == "RunCompleted"


def test_a_broken_run_gets_one_verdict_per_failed_check_and_goes_on() -> None:
    run = Run()
    out = run.step(1, "Checking it with lookup_order.", ("pay", {"to": "ACCT-0043", "cents": 12500}), results=("paid",))
    assert [e.type_name for e in out][:3] == ["EvalVerdict"] * 3 and "ToolCallRequested" in [e.type_name for e in out]
    run.step(2, "", ("pay", {"to": "ACCT-0043", "cents": 12500}), results=("paid",))
    run.step(3, "Paid 12,600 cents.")
    found = {(v.step, v.check_name) for v in run.verdicts()}
    assert found >= {(1, "grounding"), (1, "intent"), (1, "procedure"), (2, "repetition"), (3, "answer_facts")}
    assert len({v.event_id for v in run.verdicts()}) == len(run.verdicts())  # each journaled once
    [grounding] = [v for v in run.verdicts() if v.step == 1 and v.check_name == "grounding"]
    assert orjson.loads(grounding.evidence_json)["ungrounded"] == {"to": "ACCT-0043", "cents": "12500"}
    assert grounding.checks_version == checks.CHECKS_VERSION and grounding.severity == "warning"
    assert run.journal[-1].type_name == "RunCompleted"
    assert run.state is not None and run.state.eval_pending == ()


def test_verdicts_are_deterministic_on_replay() -> None:
    first, second = Run(), Run()
    for run in (first, second):
        run.step(1, "", ("pay", {"to": "ACCT-0043"}), results=("paid",))
        run.step(2, "Done: 99,999.")
    assert first.verdicts() == second.verdicts() and first.verdicts()


def test_an_invalid_call_is_a_schema_verdict() -> None:
    run = Run()
    run.step(1, "", ("pay", {"cents": 5}))
    assert [v.check_name for v in run.verdicts()] == ["schema"]


def test_a_check_that_raises_is_a_verdict_and_the_run_continues(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object) -> list[checks.Finding]:
        raise RecursionError("a check's bug")

    monkeypatch.setattr(checks, "grounding", broken)
    run = Run()
    out = run.step(1, "", ("lookup_order", {"order": "ORD-4411"}), results=("ORD-4411: due",))
    [verdict] = run.verdicts()
    assert (verdict.check_name, verdict.severity) == ("grounding", "error")
    assert "RecursionError" in verdict.evidence_json
    assert "ToolCallRequested" in [e.type_name for e in out]
    run.step(2, "Done.")
    assert run.journal[-1].type_name == "RunCompleted"


def test_offloaded_results_are_unknown_not_ungrounded() -> None:
    run = Run()
    out = run.feed(completion(1, "", [("lookup_order", '{"order": "ORD-4411"}')]))
    [request] = [e for e in out if isinstance(e, ToolCallRequested)]
    run.feed(result_of(request, "ORD-4411: a long result… [offloaded]", blob="blob:sha256:ab"))
    run.step(2, "", ("pay", {"to": "ACCT-0042", "cents": 777777}), results=("paid",))
    run.step(3, "Paid 777,777 cents.")
    assert [v.check_name for v in run.verdicts()] == []


def test_verdicts_show_in_the_run_resource_and_the_trajectory() -> None:
    verdict = EvalVerdict("v", RUN, "t", 2, "procedure", "critical", "pay requires lookup_*", "{}", "1")
    view = RunView(RUN, "t", "task", "m", [], 10, {}, "", 0)
    _summarise(view, verdict)
    flags = view.resource().model_dump(mode="json")["flags"]
    assert flags == [{"kind": "check:procedure", "step": 2, "reason": "pay requires lookup_*", "count": 1}]
    assert describe(verdict) == "step   2  check procedure failed (critical): pay requires lookup_*"


def test_replay_of_a_judged_run_is_deterministic() -> None:
    run = Run()
    run.step(1, "Checking it with lookup_order.", ("pay", {"to": "ACCT-0043", "cents": 12500}), results=("paid",))
    run.step(2, "Paid 12,600 cents.")
    assert run.verdicts() and run.journal[-1].type_name == "RunCompleted"
    replay = replay_events(run.journal)
    assert replay.deterministic, replay.divergences
