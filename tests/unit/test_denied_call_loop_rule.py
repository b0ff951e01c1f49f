"""Finding 10 of issue 13, the rule without a broker: a denied call (refused by the policy, denied by a
person, or not approved in time) never counts toward a loop; repeated denials do what the tenant's
policy says (`on_repeated_denial`: warn, flag, halt). The attack for real, through the whole stack:
tests/e2e/test_attack_denied_call_loop.py."""

from __future__ import annotations

from functools import reduce

import orjson
import pytest

from agentstream import ids
from agentstream.events import (
    ApprovalDecided,
    LoopDetected,
    PolicyDecided,
    ResumeRequested,
    RunEvent,
    RunFlagged,
    RunHalted,
    ToolCallRequested,
)
from agentstream.gateway.projection import RunView, _summarise
from agentstream.processors.orchestrator.evolve import evolve
from agentstream.processors.orchestrator.loops import THRESHOLD, denial_action
from agentstream.processors.orchestrator.state import RunState
from agentstream.registry.entry import DenialAction, TenantPolicy
from tests.unit.test_orchestrator_core import RUN, Loop, completion

ATTACK = ("calculator", '{"expression": "6*7"}')  # stands in for the attacker's call; only its repeats matter


USER = ("calculator", '{"expression": "1+1"}')


def ask(loop: Loop, step: int, call: tuple[str, str], text: str = "as the email says") -> ToolCallRequested:
    out = loop.feed(completion(step, text, [call]))
    found = [e for e in out if isinstance(e, ToolCallRequested)]
    assert found, f"step {step} asked for nothing: {[e.type_name for e in out]}"
    return found[0]


def deny(loop: Loop, request: ToolCallRequested, how: str = "policy") -> list[RunEvent]:
    """The policy gate's events for a denied call, as it journals them."""
    call = request.call_id
    decision = "deny" if how == "policy" else "needs_approval"
    loop.feed(PolicyDecided(ids.policy_decided_id(call), RUN, "t", request.step, call, request.tool, "1",
                            "irreversible", decision, "tenant_deny" if how == "policy" else "tier", "no", 1))  # fmt: skip
    if how != "policy":
        loop.feed(ApprovalDecided(f"{call}/approval/decided", RUN, "t", call, ids.approval_id(call), False,
                                  "timeout" if how == "timeout" else "bob", "not mine", 2, "sig"))  # fmt: skip
    return loop.tool_result(request, f"DENIED: approval for {request.tool} denied by bob: not mine", is_error=True)


def approve(loop: Loop, request: ToolCallRequested, content: str) -> list[RunEvent]:
    call = request.call_id
    loop.feed(PolicyDecided(ids.policy_decided_id(call), RUN, "t", request.step, call, request.tool, "1",
                            "irreversible", "needs_approval", "tier", "a person must approve", 1))  # fmt: skip
    loop.feed(ApprovalDecided(f"{call}/approval/decided", RUN, "t", call, ids.approval_id(call), True, "bob", "ok",
                              2, "sig"))  # fmt: skip
    return loop.tool_result(request, content)


def of(loop: Loop, kind: type) -> list[object]:
    return [e for e in loop.journal if isinstance(e, kind)]


@pytest.mark.parametrize("how", ["policy", "person", "timeout"])
def test_repeated_denials_do_not_halt_and_the_users_task_finishes(how: str) -> None:
    loop = Loop(max_steps=20)
    for step in range(1, THRESHOLD + 3):  # five identical requests, each denied
        deny(loop, ask(loop, step, ATTACK), how)
    assert not of(loop, RunHalted) and not [e for e in of(loop, LoopDetected)]
    assert loop.state is not None and loop.state.status == "running" and loop.state.recent == ()
    # Each denial went back to the model as an observation.
    denials = [m for m in loop.state.messages if m.role == "tool"]
    assert len(denials) == THRESHOLD + 2 and all(m.is_error and m.content.startswith("DENIED") for m in denials)
    # Then the user's own call runs, and the run ends with the model's answer.
    user = ask(loop, THRESHOLD + 3, USER, "now the user's own work")
    out = loop.tool_result(user, "2")
    assert [e.type_name for e in out] == ["LlmCallRequested"]
    out = loop.feed(completion(THRESHOLD + 4, "Done: 2.", []))
    assert [e.type_name for e in out] == ["RunCompleted"]


def test_the_default_flags_the_run_once_for_review() -> None:
    loop = Loop(max_steps=20)
    for step in range(1, THRESHOLD + 3):
        deny(loop, ask(loop, step, ATTACK))
        flags = of(loop, RunFlagged)
        assert len(flags) == (1 if step >= THRESHOLD else 0), step
    (flag,) = of(loop, RunFlagged)
    assert isinstance(flag, RunFlagged) and flag.kind == "repeated_denial" and flag.count == THRESHOLD
    assert flag.step == THRESHOLD and "calculator" in orjson.loads(flag.evidence_json)["repeated"]


def test_warn_journals_the_repeated_denial_once() -> None:
    loop = Loop(max_steps=20, on_repeated_denial="warn")
    for step in range(1, THRESHOLD + 3):
        deny(loop, ask(loop, step, ATTACK), "person")
    (warned,) = of(loop, LoopDetected)
    assert isinstance(warned, LoopDetected) and (warned.kind, warned.action) == ("denied_call", "warn")
    assert not of(loop, RunFlagged) and not of(loop, RunHalted)


def test_a_tenant_that_chose_halt_halts_at_the_third_denial_and_may_resume() -> None:
    loop = Loop(max_steps=20, on_repeated_denial="halt")
    for step in range(1, THRESHOLD):
        deny(loop, ask(loop, step, ATTACK))
    out = deny(loop, ask(loop, THRESHOLD, ATTACK))
    assert [e.type_name for e in out] == ["LoopDetected", "RunHalted"], out
    detected, halt = out
    assert isinstance(detected, LoopDetected) and (detected.kind, detected.action) == ("denied_call", "halt")
    assert isinstance(halt, RunHalted) and halt.limit == "repeated_denial" and halt.resumable
    assert loop.state is not None and loop.state.status == "halted"
    out = loop.feed(ResumeRequested(ids.resume_id(RUN, 1), RUN, "t", 1, 0, "looked at it", "tester"))
    assert [e.type_name for e in out] == ["LlmCallRequested"]  # a fresh window: the run goes on
    out = loop.feed(completion(THRESHOLD + 1, "Done.", []))
    assert [e.type_name for e in out] == ["RunCompleted"]


def test_approved_calls_ran_so_they_still_make_a_loop() -> None:
    loop = Loop(max_steps=20)
    for step in range(1, THRESHOLD):
        approve(loop, ask(loop, step, ATTACK), "42")
    out = loop.feed(completion(THRESHOLD, "again", [ATTACK]))
    assert [e.type_name for e in out] == ["LoopDetected", "RunHalted"]
    assert not any(isinstance(e, ToolCallRequested) for e in out)  # the third one is stopped before it runs


def test_denials_between_runs_of_a_call_do_not_complete_its_loop() -> None:
    loop = Loop(max_steps=20)
    loop.tool_result(ask(loop, 1, ATTACK, "a"), "42")  # ran once
    for step in (2, 3, 4):
        deny(loop, ask(loop, step, ATTACK, "b"))  # then the gate refuses it (say, a per-run limit)
    assert not of(loop, RunHalted)
    assert loop.state is not None and len(loop.state.recent) == 2  # what ran: one output and its call


def test_the_rule_replays_to_the_same_state() -> None:
    loop = Loop(max_steps=20, on_repeated_denial="halt")
    for step in range(1, THRESHOLD + 1):
        deny(loop, ask(loop, step, ATTACK), "person")
    replayed = reduce(lambda state, event: evolve(event, state), loop.journal, None)
    assert isinstance(replayed, RunState) and replayed == loop.state


def test_the_action_comes_from_the_tenant_policy_with_a_safe_default() -> None:
    assert TenantPolicy().on_repeated_denial == "flag"
    actions: tuple[DenialAction, ...] = ("warn", "flag", "halt")
    for action in actions:
        policy = TenantPolicy(on_repeated_denial=action)
        assert TenantPolicy.from_json(policy.to_json()).on_repeated_denial == action
    assert TenantPolicy.from_json('{"deny": []}').on_repeated_denial == "flag"  # a policy from before
    assert TenantPolicy.from_json('{"on_repeated_denial": "explode"}').on_repeated_denial == "flag"
    assert denial_action("") == denial_action("bogus") == "flag"
    assert Loop(on_repeated_denial="halt").state.on_repeated_denial == "halt"  # type: ignore[union-attr]


def test_the_run_resource_shows_the_flag() -> None:
    view = RunView(RUN, "t", "task", "m", [], 10, {}, "", 0)
    _summarise(view, RunFlagged("f", RUN, "t", 3, "repeated_denial", "asked 3 times", "d:x", 3, "{}"))
    flags = view.resource().model_dump(mode="json")["flags"]
    assert flags == [{"kind": "repeated_denial", "step": 3, "reason": "asked 3 times", "count": 3}]
