"""decide(state) -> events: what the run needs next, as a pure function of its state.

Returns intents whose ids are deterministic, so deciding twice on the same state yields the same
events, which downstream consumers recognise as duplicates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import orjson

from agentstream import ids
from agentstream.codemode.interface import RUN_CODE_TOOL
from agentstream.codemode.interface import prompt as code_prompt
from agentstream.context.compaction import READ_RESULT_TOOL
from agentstream.context.settings import OFF, ContextSettingsError, parse_settings
from agentstream.events import (
    LlmCallRequested,
    LoopDetected,
    RunCancelled,
    RunCompleted,
    RunEvent,
    RunFailed,
    RunFlagged,
    RunHalted,
    RunStarted,
    ToolCallRequested,
)
from agentstream.journal_limits import model_output_limit, utf8_size_over
from agentstream.llm import ToolSpec, messages_to_json, tools_to_json
from agentstream.memory.paths import MEMORY_TOOLS
from agentstream.processors.orchestrator import codemode
from agentstream.processors.orchestrator.context import compaction_events
from agentstream.processors.orchestrator.evaluating import verdict_events
from agentstream.processors.orchestrator.graph.plan import graph_tools, plan
from agentstream.processors.orchestrator.loops import DEFAULT_ON_REPEATED_DENIAL, WINDOW
from agentstream.processors.orchestrator.state import PlannedCall, RunState
from agentstream.processors.orchestrator.subagents import SubagentLimits, spawn_events
from agentstream.routing import choose_tier
from agentstream.subagents import SPAWN_AGENT
from agentstream.workflows.definition import APPROVAL_TOOL

DEFAULT_SYSTEM_PROMPT = (
    "You are an agent running on agentstream. Work step by step: call tools when you need facts or "
    "actions, read their results, and answer in plain text when the task is done."
)


# With a memory tool pinned, the prompt says where the tenant's memory is (its contents are read on
# demand, through the tool: the orchestrator stays pure and the reads are journaled as calls).
MEMORY_PROMPT = (
    " You have a long-term memory in /memories that persists across runs: view it before you start, "
    "and record there what a later run of this task should know."
)


@dataclass(frozen=True)
class OrchestratorConfig:
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    platform_max_steps: int = 100  # no run may exceed this, whatever it asked for
    max_invalid_streak: int = 3  # consecutive steps with only invalid tool calls before failing
    max_tokens: int = 1024
    tool_timeout_ms: int = 30000
    subagents: SubagentLimits | None = None  # None: the platform's settings (subagents.platform_limits)


# A version's tool-choice rule: given a call the model asked for (tool name, arguments JSON), the
# call to request instead (routed to another pinned tool, or with rewritten arguments), or None to
# leave it to the next rule. Pure and deterministic: replay and shadow runs re-decide with it.
ToolRule = Callable[[str, str], "tuple[str, str] | None"]


def decide(
    state: RunState,
    catalog: Mapping[str, ToolSpec],
    config: OrchestratorConfig,
    versions: Mapping[str, str] | None = None,
    on_repeated_denial: str = DEFAULT_ON_REPEATED_DENIAL,
    pins: Mapping[str, str] | None = None,
    context_defaults: str = "",
    *,
    rules: tuple[ToolRule, ...] = (),
    version: str = "",
    eval_defaults: str = "",
    workflow_json: str = "",
) -> list[RunEvent]:
    """`catalog`/`versions`: the tools the tenant may use and their registry versions, needed only
    to start a run, which pins them; afterwards the run uses what it pinned. So are the tenant's
    `on_repeated_denial` and context defaults: a policy change reaches runs started after it.
    `config`, `rules` and `version`: the orchestrator version the run pinned (`version` is only
    recorded, in RunStarted; processors/orchestrator/versions.py resolves it)."""
    run, tenant = state.run_id, state.tenant_id
    if state.terminal:
        return []
    if state.status == "requested":
        started = _start(state, catalog, config, versions or {}, on_repeated_denial, pins or {}, context_defaults,
                         workflow_json)  # fmt: skip
        if isinstance(started, RunStarted):  # with the tenant's evaluation policy of the day, pinned
            started = replace(started, orchestrator_version=version, eval_json=eval_defaults,
                              workflow_json=workflow_json)  # fmt: skip
        return [started]
    if state.cancel_reason is not None:
        return [RunCancelled(ids.terminal_id(run), run, tenant, state.step, state.cancel_reason)]
    if state.status == "halted":
        return []  # waits for a resume (or a cancel)
    verdicts = verdict_events(state)  # step checks that failed: journaled with whatever comes next
    noticed = [*_loop_notice(state), *verdicts]
    if state.halt_limit:
        halt = state.halts + 1
        return [
            *noticed,
            RunHalted(ids.halt_id(run, halt), run, tenant, state.step, halt, state.halt_limit, state.halt_reason, True),
        ]
    if state.graph is not None:  # an explicit graph: its nodes decide (graph/plan.py)
        return [*noticed, *plan(state, config.max_tokens, config.tool_timeout_ms, config.platform_max_steps)]
    if state.llm_failure is not None:
        return [RunFailed(ids.terminal_id(run), run, tenant, state.step, "model_error", state.llm_failure)]
    if state.final_answer is not None:
        answer = state.final_answer
        return [*verdicts, RunCompleted(ids.terminal_id(run), run, tenant, state.step, answer, "final answer")]
    if state.invalid_streak >= config.max_invalid_streak:
        reason = f"the model produced only invalid tool calls {state.invalid_streak} steps in a row"
        return [*verdicts, RunFailed(ids.terminal_id(run), run, tenant, state.step, "invalid_tool_calls", reason)]
    if state.llm_pending is not None:
        return noticed
    if state.planned:
        return noticed + spawn_events(state, config.subagents) + [  # spawn_agent calls: subagents.py
            e for p in state.planned if p.needs_request and p.tool != SPAWN_AGENT  # a run_code call is a program: its rounds, in codemode.py
            for e in (codemode.requests(state, p, config.tool_timeout_ms) if p.tool == RUN_CODE_TOOL
                      else (_tool_request(state, config, p, rules),))
        ]  # fmt: skip
    if state.step >= config.platform_max_steps:
        # The platform cap bounds every run, so no resume could lift it: an ending, not a halt.
        reason = f"platform step cap reached: {state.step} model calls (platform cap {config.platform_max_steps})"
        return [*verdicts, RunFailed(ids.terminal_id(run), run, tenant, state.step, "step_cap", reason)]
    if state.step >= state.max_steps:
        reason = f"step cap reached: {state.step} model calls (run cap {state.max_steps}); resume with more steps"
        halt = state.halts + 1
        return [*verdicts, RunHalted(ids.halt_id(run, halt), run, tenant, state.step, halt, "step_cap", reason, True)]
    if (compacting := compaction_events(state, config.max_tokens)) is not None:
        return [*noticed, *compacting]
    messages_json = messages_to_json(state.messages)
    limit = model_output_limit()
    if (size := utf8_size_over(limit, messages_json, state.tools_json)) is not None:
        # A request the journal cannot hold would stall the run's writer for good; the conversation
        # only grows, so no retry or resume could bring it back under the limit.
        reason = (f"the conversation and tools are {size} bytes; a model request may carry at most "
                  f"{limit} (the journal's record limit less room for the event)")  # fmt: skip
        return [RunFailed(ids.terminal_id(run), run, tenant, state.step, "context_too_large", reason)]
    step = state.step + 1
    call_id = ids.llm_call_id(run, step)
    tier, tier_reason = choose_tier(step, state.messages, state.model)
    return [
        *noticed,
        LlmCallRequested(
            event_id=ids.requested_event_id(call_id),
            run_id=run,
            tenant_id=tenant,
            step=step,
            call_id=call_id,
            model=state.model,
            messages_json=messages_json,
            tools_json=state.tools_json,
            max_tokens=config.max_tokens,
            tier=tier,
            tier_reason=tier_reason,
        ),
    ]


def _tool_request(state: RunState, config: OrchestratorConfig, p: PlannedCall, rules: tuple[ToolRule, ...]) -> RunEvent:
    tool, arguments = p.tool, p.arguments_json
    for rule in rules:  # the first rule with an opinion decides
        if (routed := rule(tool, arguments)) is not None:
            tool, arguments = routed
            break
    return ToolCallRequested(
        event_id=ids.requested_event_id(p.call_id),
        run_id=state.run_id,
        tenant_id=state.tenant_id,
        step=state.step,
        call_id=p.call_id,
        tool_call_id=p.tool_call_id,
        tool=tool,
        arguments_json=arguments,
        idempotency_key=p.call_id,
        timeout_ms=config.tool_timeout_ms,
        tool_version=state.tool_versions.get(tool, ""),
    )


def _loop_notice(state: RunState) -> list[RunEvent]:
    if not state.loop_signature:
        return []
    denial = state.loop_kind == "denied_call"
    recent = state.denied_recent if denial else state.recent
    evidence = {"repeated": state.loop_evidence, "recent_signatures": list(recent)}
    prefix = ids.step_prefix(state.run_id, state.step)
    action = state.loop_action or state.on_loop
    if action == "flag":
        reason = f"the model asked {state.loop_count} times for a call that was denied: {state.loop_evidence[:120]}"
        return [
            RunFlagged(
                event_id=f"{prefix}/flag",
                run_id=state.run_id,
                tenant_id=state.tenant_id,
                step=state.step,
                kind="repeated_denial",
                reason=reason,
                signature=state.loop_signature,
                count=state.loop_count,
                evidence_json=orjson.dumps(evidence).decode(),
            )
        ]
    return [
        LoopDetected(
            # Not the step's own loop id: a loop of what ran and a repeated denial may share a step.
            event_id=f"{prefix}/denied-loop" if denial else f"{prefix}/loop",
            run_id=state.run_id,
            tenant_id=state.tenant_id,
            step=state.step,
            kind=state.loop_kind,
            action=action,
            signature=state.loop_signature,
            count=state.loop_count,
            window=WINDOW,
            evidence_json=orjson.dumps(evidence).decode(),
        )
    ]


def _start(
    state: RunState,
    catalog: Mapping[str, ToolSpec],
    config: OrchestratorConfig,
    versions: Mapping[str, str],
    on_repeated_denial: str,
    pins: Mapping[str, str],
    context_defaults: str,
    workflow_json: str = "",
) -> RunEvent:
    run, tenant = state.run_id, state.tenant_id
    try:
        context = parse_settings(state.context_json, base=parse_settings(context_defaults))
    except ContextSettingsError as exc:
        return RunFailed(ids.terminal_id(run), run, tenant, 0, "bad_request", f"context settings: {exc}")
    # "All tools" means the tenant's own and the demo ones: read_result joins only runs that clear
    # results, the memory tools only runs that name them.
    names = state.tool_names or tuple(
        sorted(
            n
            for n in catalog
            if n not in (READ_RESULT_TOOL, RUN_CODE_TOOL, SPAWN_AGENT, APPROVAL_TOOL) and n not in MEMORY_TOOLS
        )
    )  # code mode, subagents and the approval step (a workflow's) too only for runs that name them
    if state.parent_run_id and not state.tool_names:
        names = ()  # a subagent has only the tools its parent handed it: none by default
    if state.workflow:  # a graph pins what its nodes call (and only that, unless the run named tools)
        graph_names = graph_tools(state, workflow_json)
        if isinstance(graph_names, str):
            return RunFailed(ids.terminal_id(run), run, tenant, 0, "unknown_workflow", graph_names)
        names = graph_names
    if context.on and READ_RESULT_TOOL in catalog and READ_RESULT_TOOL not in names:
        names = (*names, READ_RESULT_TOOL)  # cleared results are read back through it
    missing = [n for n in names if n not in catalog]
    if missing:
        reason = f"unknown tool(s) requested: {', '.join(missing)}"
        return RunFailed(ids.terminal_id(run), run, tenant, 0, "unknown_tool", reason)
    if state.max_steps < 1:
        return RunFailed(ids.terminal_id(run), run, tenant, 0, "bad_request", "max_steps must be at least 1")
    pinned = tools_to_json([catalog[n] for n in names])
    return RunStarted(
        event_id=ids.run_started_id(run),
        run_id=run,
        tenant_id=tenant,
        model=state.model,
        tools_json=pinned,
        max_steps=min(state.max_steps, config.platform_max_steps),
        system_prompt=config.system_prompt
        + (MEMORY_PROMPT if any(n in MEMORY_TOOLS for n in names) else "")
        # A run that pinned run_code is told the functions its programs may call, from the pinned schemas.
        + (code_prompt(catalog[n] for n in names) if RUN_CODE_TOOL in names else ""),
        tool_versions={n: versions[n] for n in names if n in versions},
        on_repeated_denial=on_repeated_denial,
        # Exactly which tool each name is (owner, version, contract): what the gate and the
        # executor resolve for this run, whatever is registered under the name later.
        tool_pins={n: pins[n] for n in names if n in pins},
        context_json="" if context == OFF else context.to_json(),
    )
