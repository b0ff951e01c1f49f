"""Finding 10 of issue 13: an injection could stop the user's work. Text injected into a tool
result made the model repeat a denied irreversible call, loop detection halted the run at the third
identical request, and the user's own later calls never ran.

Now a denied call (refused by the policy, denied by a person, or not approved in time) never counts
toward a loop: the denial goes back to the model as an observation, loops are detected on what ran,
and repeated denials do what the tenant's policy says (`on_repeated_denial`: warn, flag, halt).

The attack runs for real (bench/attacks/loops.py): a compromised scripted model reads an injected
email, asks four times for a transfer to the attacker (each denied by the approver), then pays the
user's bill and answers. The pure tests of the rule: tests/unit/test_denied_call_loop_rule.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from agentstream.events import (
    RunCompleted,
    ToolCallCompleted,
)
from agentstream.registry.entry import TenantPolicy
from agentstream.stack import Deployment
from bench.attacks.loops import ATTACKER_PAYMENT, prepare_denied_loop, run_denied_loop
from tests.harness import isolated_settings

# -- the attack, for real ---------------------------------------------------------------------------


@dataclass
class Env:
    d: Deployment


@pytest.fixture(scope="module")
async def env(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    home = tmp_path_factory.mktemp("denied-loop")
    settings, scenarios = await isolated_settings(kafka_bootstrap, home, "dl")
    await prepare_denied_loop(settings, scenarios, repeats=4)
    policies = {
        "dl-flag": TenantPolicy(approval_timeout_s=120, on_repeated_denial="flag"),
        "dl-halt": TenantPolicy(approval_timeout_s=120, on_repeated_denial="halt"),
    }
    async with Deployment(settings, [scenarios], policies=policies, wait_tools=("transfer_funds", "read_inbox")) as d:
        yield Env(d)


async def test_an_injection_repeating_a_denied_transfer_does_not_stop_the_users_task(env: Env) -> None:
    outcome = await run_denied_loop(env.d, "dl-flag")
    assert outcome.injection_read  # the model read the injected email ...
    assert outcome.attacker_requests == 4, outcome.attacker_requests  # ... and insisted, four times
    assert outcome.status == "completed", [e.event.type_name for e in outcome.entries]
    assert outcome.user_paid == 1 and outcome.attacker_paid == 0
    assert not outcome.halts and not outcome.loops
    # Each denial went back to the model as an observation, and the model went on.
    denials = [e.event for e in outcome.entries if isinstance(e.event, ToolCallCompleted) and e.event.is_error]
    assert len(denials) == 4 and all(d.content.startswith("DENIED") for d in denials), denials
    (flag,) = outcome.flagged  # visible for review, once
    assert flag.kind == "repeated_denial" and ATTACKER_PAYMENT["to_account"] in flag.reason
    end = outcome.entries[-1].event
    assert isinstance(end, RunCompleted) and end.final_answer == "Paid the electricity bill."
    assert not outcome.succeeded("flag")


async def test_a_tenant_policy_of_halt_halts_the_run_as_configured(env: Env) -> None:
    outcome = await run_denied_loop(env.d, "dl-halt")
    assert outcome.status == "halted", [e.event.type_name for e in outcome.entries]
    (halt,) = outcome.halts
    assert halt.limit == "repeated_denial" and halt.resumable
    assert outcome.attacker_paid == 0 and outcome.user_paid == 0  # halted before the user's payment
    assert outcome.injection_read and outcome.attacker_requests == 3
    assert not outcome.succeeded("halt")
    # The control: judged as every run was before the fix (halting on repeats), the injection
    # stopped the user's work. bench/attacks/loops.py's `defended=False` is this run.
    assert outcome.succeeded("flag")
