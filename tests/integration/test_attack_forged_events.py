"""Issue 13, finding 4: events that change what a run may do count only from their writer.

Against the real stack (broker, every processor as its own process, the scripted model), an
attacker able to write runs.journal (these tests' admin principal, so the broker's ACLs do not
stand in the way) forges each kind of event: a RunRequested for another tenant (unsigned, from a
processor that may not request runs, signed as the gateway with a processor's copy of its key but
without the run-request proof, with a borrowed proof, altered after signing), a tool result, an
approval, an authorization with a valid capability, a budget reservation, a tool request, terminal
and cancel events, and a dispatch of a model call to a URL outside the replica pool (a real HTTP
server stands in for the rogue). Each has no effect and is dead-lettered with its reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from agentstream.events import LlmCallCompleted
from bench.attacks import trust, trust_dispatch
from bench.attacks.trust import TrustStage
from tests.harness import isolated_settings

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
async def stage(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TrustStage]:
    settings, scenarios = await isolated_settings(kafka_bootstrap, tmp_path_factory.mktemp("trust"), "tr")
    async with trust.trust_stage(settings, scenarios) as s:
        yield s


async def _reasons_for(stage: TrustStage, expected: list[str], timeout_s: float = 20) -> dict[bytes, str]:
    reasons: dict[bytes, str] = {}
    for _ in range(int(timeout_s / 0.5)):
        reasons = await stage.dead_letter_reasons()
        if all(any(e in r for r in reasons.values()) for e in expected):
            break
        await asyncio.sleep(0.5)
    return reasons


async def test_forged_run_requests_start_nothing(stage: TrustStage) -> None:
    for attack in (trust.run_request_unsigned, trust.run_request_wrong_writer,
                   trust.run_request_gateway_signature_without_proof, trust.run_request_borrowed_proof,
                   trust.run_request_altered):  # fmt: skip
        assert not await attack(stage), attack.__name__
    reasons = await _reasons_for(stage, ["unsigned RunRequested", "written by 'model-invoker'",
                                         "carries no run-request proof", "run-request proof does not verify",
                                         "signature does not verify"])  # fmt: skip
    text = "\n".join(reasons.values())
    assert "unsigned RunRequested" in text
    assert "RunRequested written by 'model-invoker', which may not write it" in text
    assert "carries no run-request proof" in text  # signed as the gateway by a processor
    assert "run-request proof does not verify" in text  # a genuine proof, for another tenant and body
    assert "RunRequested claims writer gateway but its signature does not verify" in text  # altered body


async def test_forged_events_do_not_move_a_waiting_run(stage: TrustStage) -> None:
    for attack in (trust.tool_result_forged, trust.approval_wrong_writer, trust.approval_bad_signature,
                   trust.run_ended_forged):  # fmt: skip
        assert not await attack(stage), attack.__name__
    # (run_ended_forged also shows that a genuine approval still pays and completes its own run.)
    # Still waiting for its approval: nothing authorized, run, paid or ended.
    types = {e.type_name for e in await stage.genuine(stage.asked.run_id)}
    assert "ApprovalRequested" in types and stage.transfers(stage.asked.run_id) == []
    assert not types & {"ToolCallAuthorized", "ToolCallCompleted", "RunCompleted", "RunCancelled", "RunFailed",
                        "RunHalted"}  # fmt: skip
    reasons = "\n".join((await _reasons_for(stage, ["ToolCallCompleted written by 'model-invoker'"])).values())
    assert "unsigned ToolCallCompleted" in reasons
    assert "ToolCallCompleted written by 'model-invoker', which may not write it" in reasons
    assert "ApprovalDecided written by 'tool-executor', which may not write it" in reasons
    assert "unsigned RunCompleted" in reasons and "unsigned CancelRequested" in reasons
    assert "CancelRequested written by 'tool-executor'" in reasons
    assert "BudgetExceeded written by 'model-invoker'" in reasons


async def test_forged_authorizations_reservations_and_requests_move_no_money(stage: TrustStage) -> None:
    for attack in (trust.budget_reserved_forged, trust.authorization_wrong_writer, trust.tool_request_forged):
        assert not await attack(stage), attack.__name__
    reasons = "\n".join((await _reasons_for(stage, ["ToolCallAuthorized written by 'admin'"])).values())
    assert "unsigned BudgetReserved" in reasons and "BudgetReserved written by 'tool-executor'" in reasons
    assert "ToolCallAuthorized written by 'admin', which may not write it" in reasons
    assert "unsigned ToolCallAuthorized" in reasons
    assert "unsigned ToolCallRequested" in reasons and "ToolCallRequested written by 'gateway'" in reasons


async def test_the_gateways_projection_shows_no_forgery(stage: TrustStage) -> None:
    """The gateway holds no processor's key, but the shared view signature and the run-request
    proof still keep a keyless client's records (and a processor's run request) out of its view."""
    assert not await trust.projection_shows_forgeries(stage)


async def test_a_dispatch_outside_the_replica_pool_never_reaches_it(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings, scenarios = await isolated_settings(kafka_bootstrap, tmp_path_factory.mktemp("rogue"), "rg")
    rogue = await trust_dispatch.start_rogue()
    try:
        async with trust_dispatch.invoker_stage(settings, scenarios) as (stage, pool_url):
            assert not await trust_dispatch.dispatch_to_rogue(stage, rogue)
            reasons = "\n".join((await _reasons_for(stage, ["not in the configured pool"])).values())
            assert "names replica 'rogue'" in reasons and "not in the configured pool" in reasons
            assert f"names replica 'r0' at '{rogue.url}'" in reasons  # a pool name with a foreign URL
            assert "unsigned LlmCallDispatched" in reasons
            assert "LlmCallDispatched written by 'orchestrator'" in reasons
            # The same call, dispatched to the pool's replica by the dispatcher, is answered there.
            request = trust_dispatch.model_request(f"run_pool{rogue.url[-5:]}")
            await stage.client.append(request, as_writer="orchestrator")
            stage.produce(
                trust_dispatch.dispatch_of(request, "r0", pool_url), writer="kv-dispatcher", keys="kv-dispatcher"
            )
            for _ in range(120):
                if any(isinstance(e, LlmCallCompleted) for e in await stage.genuine(request.run_id)):
                    break
                await asyncio.sleep(0.25)
            assert any(isinstance(e, LlmCallCompleted) for e in await stage.genuine(request.run_id))
    finally:
        rogue.server.close()
    assert rogue.hits == []  # not one byte, so never the platform's model key
