"""Human-readable trajectories and summaries, computed from journal events alone."""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from agentstream.blobs.errors import BlobHandleInvalid
from agentstream.blobs.handle import BlobHandle
from agentstream.client.journal import JournalEntry, waiting_halt
from agentstream.context.settings import ContextSettingsError, parse_settings
from agentstream.contract.vocab import ApprovalStatus, RunStatus
from agentstream.events import (
    ApprovalDecided,
    CancelRequested,
    ContextCompacted,
    EvalVerdict,
    JudgeVerdict,
    LlmCallCompleted,
    LlmCallFailed,
    LlmCallRequested,
    LoopDetected,
    PolicyDecided,
    ResumeRequested,
    RunCancelled,
    RunCompleted,
    RunEvent,
    RunFailed,
    RunFlagged,
    RunHalted,
    RunRequested,
    RunStarted,
    ToolCallCompleted,
    ToolCallRequested,
)
from agentstream.llm import tools_from_json


def offloaded_size(handle: str) -> str:
    """The size a handle names, as journaled (a malformed one is shown, not trusted)."""
    try:
        return str(BlobHandle.parse(handle).size)
    except BlobHandleInvalid:
        return "?"


def _short(text: str, limit: int = 100) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _compaction_call(call_id: str) -> bool:
    # A compaction's summarization call (agentstream.ids.compaction_call_id): its answer is the
    # summary, not the run's.
    return call_id.rpartition("/")[2].startswith("compact")


def _context(pinned: str) -> str:
    try:
        settings = parse_settings(pinned)
    except ContextSettingsError:
        return f" context={_short(pinned, 60)!r}"
    if not settings.on:
        return ""
    how = "summarize" if settings.summarize else "clear only"
    return f" context=on (over ~{settings.trigger_tokens} tokens, keep {settings.keep_turns} turns, {how})"


def _compacted(event: ContextCompacted) -> str:
    try:
        cleared = len(orjson.loads(event.cleared_json))
    except (orjson.JSONDecodeError, TypeError):
        cleared = 0
    line = (
        f"step {event.step:>3}  context compacted #{event.compaction} ({event.kind}): "
        f"~{event.tokens_before} -> ~{event.tokens_after} tokens, cleared {cleared} results"
    )
    return f"{line}, summary: {_short(event.summary, 120)}" if event.summary else line


def describe(event: RunEvent) -> str | None:
    """One display line per meaningful event; bookkeeping events return None."""
    match event:
        case LlmCallRequested() if event.purpose == "compaction":
            return f"step {event.step:>3}  compaction: summarizing the earlier steps (tier {event.tier or '-'})"
        case LlmCallCompleted() if _compaction_call(event.call_id):
            return f"step {event.step:>3}  compaction summary ({event.input_tokens} tokens in): {_short(event.text)}"
        case ContextCompacted():
            return _compacted(event)
        case RunRequested():
            return f"requested  task={_short(event.task, 80)!r} model={event.model}"
        case RunStarted():
            names = ", ".join(t.name for t in tools_from_json(event.tools_json))
            return f"started    tools=[{names}] max_steps={event.max_steps}{_context(event.context_json)}"
        case LlmCallCompleted():
            calls = orjson.loads(event.tool_calls_json)
            if calls:
                asked = "; ".join(f"{c['name']}({_short(c['arguments_json'], 60)})" for c in calls)
                return f"step {event.step:>3}  model → {asked}"
            return f"step {event.step:>3}  model → answer: {_short(event.text)}"
        case LlmCallFailed():
            kind = "gave up" if event.final else "will retry"
            what = "compaction call error" if _compaction_call(event.call_id) else "model error"
            return f"step {event.step:>3}  {what} (attempt {event.attempt}, {kind}): {_short(event.message, 80)}"
        case ToolCallRequested():
            return None
        case ToolCallCompleted():
            mark = "✗" if event.is_error else "✓"
            if event.result_blob:  # offloaded: the journal holds a preview; `--fetch-blobs` prints it all
                shown = f"offloaded {offloaded_size(event.result_blob)} bytes as {event.result_blob}: "
                return f"step {event.step:>3}  {mark} {event.tool} → {shown}{_short(event.content, 60)}"
            return f"step {event.step:>3}  {mark} {event.tool} → {_short(event.content, 80)}"
        case PolicyDecided() if event.decision != "allow":
            return f"step {event.step:>3}  policy: {event.tool} {event.decision} ({event.rule}): {_short(event.reason, 80)}"
        case ApprovalDecided():
            verdict = ApprovalStatus.APPROVED if event.approved else ApprovalStatus.DENIED
            return f"approval   {verdict} by {event.decided_by}: {_short(event.reason, 80)}"
        case RunFlagged():
            return f"flagged    step {event.step} ({event.kind}): {_short(event.reason, 100)}"
        case EvalVerdict():
            failed = f"check {event.check_name} failed ({event.severity})"
            return f"step {event.step:>3}  {failed}: {_short(event.reason, 100)}"
        case JudgeVerdict():
            grade = ("passed" if event.passed else "failed") if event.graded else "not graded"
            return (
                f"judged     {grade} ({event.rubric_version}, {event.judge_run_id}): {_short(event.explanation, 100)}"
            )
        case LoopDetected():
            return f"step {event.step:>3}  loop ({event.action}): the same {event.kind.replace('_', ' ')} {event.count} times"
        case RunHalted():
            return f"halted     after {event.steps} steps ({event.limit}): {event.reason}"
        case ResumeRequested():
            return f"resume     requested by {event.requested_by}: +{event.add_steps} steps"
        case CancelRequested():
            return f"cancel     requested by {event.requested_by}: {event.reason}"
        case RunCompleted():
            return f"completed  after {event.steps} steps: {_short(event.final_answer, 120)}"
        case RunFailed():
            return f"failed     after {event.steps} steps ({event.error_type}): {event.reason}"
        case RunCancelled():
            return f"cancelled  after {event.steps} steps: {event.reason}"
    return None


@dataclass
class RunSummary:
    run_id: str = ""
    tenant_id: str = ""
    task: str = ""
    status: str = "unknown"
    reason: str = ""
    final_answer: str = ""
    steps: int = 0
    model_calls: int = 0
    model_errors: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    compactions: int = 0  # ContextCompacted: how many times the run's prompt was compacted
    started_ms: int = 0
    ended_ms: int = 0
    tools_used: dict[str, int] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return max(0, self.ended_ms - self.started_ms) / 1000.0

    def to_dict(self) -> dict[str, object]:
        return {
            "run_id": self.run_id, "tenant_id": self.tenant_id, "status": self.status, "reason": self.reason,
            "steps": self.steps, "model_calls": self.model_calls, "model_errors": self.model_errors,
            "tool_calls": self.tool_calls, "tool_errors": self.tool_errors, "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens, "compactions": self.compactions,
            "duration_s": round(self.duration_s, 3),
            "tools_used": self.tools_used, "final_answer": self.final_answer,
        }  # fmt: skip


def summarize(entries: list[JournalEntry]) -> RunSummary:
    s = RunSummary()
    halt: RunHalted | None = None
    for entry in entries:
        e = entry.event
        halt = waiting_halt(halt, e)
        s.run_id, s.tenant_id = e.run_id, e.tenant_id
        s.started_ms = s.started_ms or entry.timestamp_ms
        s.ended_ms = entry.timestamp_ms
        match e:
            case RunRequested():
                s.task, s.status = e.task, RunStatus.QUEUED  # as the API shows a run not started yet
            case RunStarted():
                s.status = RunStatus.RUNNING
            case LlmCallCompleted():
                s.model_calls += 1
                s.steps = max(s.steps, e.step)
                s.input_tokens += e.input_tokens
                s.output_tokens += e.output_tokens
            case LlmCallFailed():
                s.model_errors += 1
            case ContextCompacted():
                s.compactions += 1
            case ToolCallCompleted():
                s.tool_calls += 1
                s.tool_errors += int(e.is_error)
                s.tools_used[e.tool] = s.tools_used.get(e.tool, 0) + 1
            case RunCompleted():
                s.status, s.reason, s.final_answer, s.steps = RunStatus.COMPLETED, e.reason, e.final_answer, e.steps
            case RunFailed():
                s.status, s.reason, s.steps = RunStatus.FAILED, f"{e.error_type}: {e.reason}", e.steps
            case RunCancelled():
                s.status, s.reason, s.steps = RunStatus.CANCELLED, e.reason, e.steps
    if halt is not None:  # halted at a limit and not resumed (nor cancelled) since: it waits for a person
        s.status, s.reason, s.steps = RunStatus.HALTED, f"{halt.limit}: {halt.reason}", max(s.steps, halt.steps)
    return s


def trajectory(entries: list[JournalEntry]) -> list[tuple[str, ...]]:
    """The decisions and observations that make up a run, for comparing two runs of one scenario:
    ids, timings and token counts are left out; what the agent did and saw is kept. Tool results
    of one step are ordered by call, since parallel calls may finish in any order."""
    keyed: list[tuple[tuple[int, int, str], tuple[str, ...]]] = []
    for entry in entries:
        e = entry.event
        match e:
            case LlmCallCompleted() if _compaction_call(e.call_id):
                # after the step's observations, before the next step's call: where it happened
                keyed.append(((e.step, 3, e.call_id), ("compaction", str(e.step), e.text)))
            case LlmCallCompleted():
                keyed.append(((e.step, 0, ""), ("model", str(e.step), e.text, e.tool_calls_json)))
            case ToolCallRequested():
                keyed.append(
                    (
                        (e.step, 1, e.call_id),
                        ("tool", str(e.step), e.tool, e.arguments_json, e.idempotency_key),
                    )
                )
            case ToolCallCompleted():
                keyed.append(((e.step, 2, e.call_id), ("observation", str(e.step), e.tool, e.content, str(e.is_error))))
            case RunCompleted():
                keyed.append(((1 << 30, 0, ""), (RunStatus.COMPLETED, str(e.steps), e.final_answer)))
            case RunFailed():
                keyed.append(((1 << 30, 0, ""), (RunStatus.FAILED, str(e.steps), e.error_type)))
            case RunCancelled():
                keyed.append(((1 << 30, 0, ""), (RunStatus.CANCELLED, str(e.steps))))
    return [item for _key, item in sorted(keyed, key=lambda pair: pair[0])]
