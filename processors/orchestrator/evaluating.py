"""The step checks inside the orchestrator's fold: each model output and each step's results are
judged as evolve applies them, and a failed check becomes a pending verdict that decide journals
as an `EvalVerdict`. Pure functions of the state and the event, so replay judges alike; a clean
step adds nothing to the journal and reads only what the state already holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from agentstream import ids
from agentstream.evaluation import CHECKS_VERSION, CallView, Finding, Outcome, pinned_policy
from agentstream.evaluation import checks as c
from agentstream.evaluation.facts import Corpus
from agentstream.events import EvalVerdict, RunEvent
from agentstream.llm import ToolSpec
from agentstream.processors.orchestrator.state import PlannedCall, RunState, replace


def _corpus(state: RunState) -> Corpus:
    """The task and every observation so far, with the tenant's constants. What cannot be read
    here (an offloaded task or result, turns compacted away) makes it partial: unknown, not absent."""
    observations = [m.content for m in state.messages if m.role == "tool"]
    partial = bool(state.task_blob) or state.compactions > 0 or any(m.blob for m in state.messages)
    return Corpus.of([state.task, *observations, *pinned_policy(state.eval_json).constants], partial=partial)


def judge_output(state: RunState, text: str, planned: list[PlannedCall], tools: Mapping[str, ToolSpec]) -> RunState:
    """A model output that asks for tools, before they run: valid, grounded, as announced, in order."""
    policy = pinned_policy(state.eval_json)
    calls = [CallView(p.tool, p.arguments_json, p.result if p.invalid else None) for p in planned]
    corpus = _corpus(state)
    schemas = {name: spec.input_schema for name, spec in tools.items()}
    findings = c.assess(
        policy,
        [
            ("schema", lambda: c.schema(calls)),
            ("grounding", lambda: c.grounding(calls, schemas, corpus)),
            ("intent", lambda: c.intent(text, calls, list(tools))),
            ("procedure", lambda: c.procedure(calls, state.eval_done, policy)),
        ],
    )
    return _pend(state, findings)


def judge_answer(state: RunState, text: str) -> RunState:
    policy = pinned_policy(state.eval_json)
    return _pend(state, c.assess(policy, [("answer_facts", lambda: c.answer_facts(text, _corpus(state)))]))


def judge_results(state: RunState) -> dict[str, Any]:
    """A step's calls are settled: what succeeded counts for later procedures; what repeated an
    earlier call and its result is a repetition. Returns the state's changes, for the caller's own
    `replace` (a step's one copy of the state, not two)."""
    policy = pinned_policy(state.eval_json)
    ran = [p for p in state.planned if p.ran]
    done = tuple(dict.fromkeys((*state.eval_done, *(p.tool for p in ran if not p.is_error))))
    seen, findings = state.eval_seen, list[Finding]()
    if policy.runs("repetition"):
        outcomes = [Outcome(p.tool, p.signature, (p.result or "") + p.result_blob, p.is_error) for p in ran]
        try:
            seen, findings = c.repetition(state.eval_seen, outcomes, policy)
        except Exception as exc:  # contained, as `assess` contains the others
            findings = [Finding("repetition", "error", f"the repetition check failed: {type(exc).__name__}")]
    return {"eval_done": done, "eval_seen": seen, **_pending(state, findings)}


def _pend(state: RunState, findings: list[Finding]) -> RunState:
    return replace(state, **_pending(state, findings)) if findings else state


def _pending(state: RunState, findings: list[Finding]) -> dict[str, Any]:
    if not findings:
        return {}
    pending = list(state.eval_pending)
    for n, f in enumerate(findings, start=state.eval_count + 1):
        event_id = f"{ids.step_prefix(state.run_id, state.step)}/eval/{n}"
        pending.append(orjson.dumps([event_id, state.step, f.check, f.severity, f.reason, f.evidence]).decode())
    return {"eval_pending": tuple(pending), "eval_count": state.eval_count + len(findings)}


def verdict_events(state: RunState) -> list[RunEvent]:
    out: list[RunEvent] = []
    for raw in state.eval_pending:
        event_id, step, check, severity, reason, evidence = orjson.loads(raw)
        out.append(
            EvalVerdict(
                event_id,
                state.run_id,
                state.tenant_id,
                step,
                check,
                severity,
                reason,
                orjson.dumps(evidence, option=orjson.OPT_SORT_KEYS).decode(),
                CHECKS_VERSION,
            )
        )
    return out


def verdict_journaled(event: EvalVerdict, state: RunState | None) -> RunState | None:
    if state is None or not state.eval_pending:
        return state
    prefix = "[" + orjson.dumps(event.event_id).decode() + ","
    kept = tuple(raw for raw in state.eval_pending if not raw.startswith(prefix))
    return state if len(kept) == len(state.eval_pending) else replace(state, eval_pending=kept)
