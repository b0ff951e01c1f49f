"""The policy gate as a processor core.

Per run it keeps the tool versions the run pinned and the calls it let through; per call a small
state machine: `requested` -> `awaiting` (approval) -> `answered` -> `done`. State follows the
journal, the gate's own decisions included, so a restart rebuilds it, pending approvals and their
deadlines included: the approval timer (`tick`) fires from rebuilt state, never from memory.

Per run, too, the run's context for data-flow taint (`taint.py`): fingerprints of what the run
read, private (results of the tools the tenant marks private) and public (the task, other results),
learnt from `RunRequested` and `ToolCallCompleted` as they pass, so replay rebuilds them as well.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from agentstream import ids
from agentstream.credentials.delegation import DelegationIssuer
from agentstream.events import (
    TERMINAL_TYPES,
    ApprovalDecided,
    ApprovalRequested,
    CancelRequested,
    Event,
    PolicyDecided,
    RunEvent,
    RunRequested,
    RunStarted,
    ToolCallAuthorized,
    ToolCallCompleted,
    ToolCallRequested,
)
from agentstream.kafka.core import Outcome
from agentstream.kafka.state import EndedRuns, PartitionStore
from agentstream.processors.policy_gate import taint
from agentstream.processors.policy_gate.rules import evaluate
from agentstream.registry.catalog import ToolCatalog
from agentstream.registry.entry import ToolEntry
from agentstream.registry.pins import identity_of, pin_of, resolve_pin
from agentstream.security.signing import (
    TIMEOUT,
    Signer,
    approval_verifies,
    capability_verifies,
    sign_capability,
    signed_decision,
)
from agentstream.subagents import SPAWN_AGENT

HANDLED = frozenset(
    {"RunRequested", "RunStarted", "ToolCallRequested", "PolicyDecided", "ApprovalRequested", "ApprovalDecided",
     "ToolCallAuthorized", "ToolCallCompleted", "CancelRequested", *TERMINAL_TYPES}
)  # fmt: skip


# Cancelled or ended runs keep a marker, for the last ENDED_KEEP of them per partition, so a late
# or re-sent event of theirs (a request re-emitted after a crash) decides nothing and stores
# nothing; the run's record and its calls are deleted at once. See processors/orchestrator/core.py.
ENDED_KEEP = 10_000  # the bound and its reason: agentstream/calls.py CLOSED_KEEP


@dataclass(frozen=True)
class GateConfig:
    capability_ttl_s: int = 300
    delegation_ttl_s: int = 300


class PolicyGateCore:
    name = "policy-gate"

    def __init__(
        self,
        catalog: ToolCatalog,
        capability: Signer,
        approval: Signer,
        delegations: DelegationIssuer,
        clock: Callable[[], int],
        config: GateConfig | None = None,
        *,
        ended_keep: int = ENDED_KEEP,
    ) -> None:
        self.catalog = catalog
        self.capability = capability
        self.approval = approval
        self.delegations = delegations
        self.clock = clock  # read only to stamp decisions, which record the time they used
        self.config = config or GateConfig()
        self.forged_approvals = 0
        self._ended = EndedRuns("ended/", ended_keep)
        self._timeouts_sent: set[str] = set()

    def accepts(self, type_name: str) -> bool:
        return type_name in HANDLED

    def still_wanted(self, store: PartitionStore, key: str) -> bool:
        return True  # the gate starts no side effects

    # -- evolving -----------------------------------------------------------------------------------

    def apply(self, store: PartitionStore, event: Event, *, live: bool) -> Outcome:
        if not isinstance(event, RunEvent):
            return Outcome()
        run = store.get(f"run/{event.run_id}")
        if run is None and self._ended.ended(store, event.run_id):
            return Outcome()  # over (cancelled or ended): a late or re-sent event leaves nothing behind
        if isinstance(event, RunRequested):
            # The user's own words are no secret of the run's (public).
            if run is None:  # a subagent's task is its parent's words, which may carry what the parent read
                source = SPAWN_AGENT if event.parent_run_id else None
                self._learn(store, event.run_id, event.tenant_id, event.task, source, tools=event.tools)
            return Outcome()
        if isinstance(event, RunStarted):
            if run is None:
                run_state = {"versions": event.tool_versions, "pins": event.tool_pins, "counts": {}, "closed": False}
                store.put(f"run/{event.run_id}", run_state)
            return Outcome()
        if isinstance(event, CancelRequested) or event.type_name in TERMINAL_TYPES:
            self._close(store, event.run_id, run)
            return Outcome()
        if run is None or run["closed"]:
            return Outcome()  # not started here, or over: no decision is made after a cancel
        match event:
            case ToolCallRequested() if event.tool == SPAWN_AGENT:
                pass  # no tool runs: the orchestrator starts a child run, whose own calls are gated
            case ToolCallRequested():
                if store.get(f"call/{event.call_id}") is not None:
                    return Outcome()
                _set_call(store, event.call_id, {"stage": "requested", "request": event.to_record()})
                return Outcome(emit=self._decide(store, event, run)) if live else Outcome()
            case PolicyDecided() if event.decision != "deny":
                self._count(store, event.run_id, run, event.tool, event.call_id)
            case ApprovalRequested():
                call = store.get(f"call/{event.call_id}")
                if call is not None and call["stage"] == "requested":
                    call.update(stage="awaiting", expires_ms=event.expires_ms, approval_id=event.approval_id)
                    _set_call(store, event.call_id, call)
            case ApprovalDecided():
                return self._on_decision(store, event, live)
            case ToolCallAuthorized() if not capability_verifies(self.capability, event):
                pass  # forged: it neither runs (the executor verifies) nor settles the call here
            case ToolCallAuthorized() | ToolCallCompleted():
                if isinstance(event, ToolCallAuthorized):
                    self._count(store, event.run_id, run, event.tool, event.call_id)
                else:
                    whole = not event.result_blob  # offloaded: the journal holds only a preview
                    self._learn(store, event.run_id, event.tenant_id, event.content, event.tool, whole=whole)
                call = store.get(f"call/{event.call_id}")
                if call is not None and call["stage"] != "done":
                    _set_call(store, event.call_id, {"stage": "done"})
        return Outcome()

    def _close(self, store: PartitionStore, run_id: str, run: dict[str, Any] | None) -> None:
        # A cancel or an end is final: the run's record goes, its marker stays (bounded, see ENDED_KEEP).
        if run is not None:
            store.delete(f"run/{run_id}")
        self._ended.mark(store, run_id)
        for prefix in (f"call/{run_id}/", f"awaiting/{run_id}/"):
            for key in list(store.keys_with_prefix(prefix)):
                store.delete(key)
        store.delete(f"taint/{run_id}")  # an ended run makes no more calls: its context may go

    def _learn(
        self,
        store: PartitionStore,
        run_id: str,
        tenant_id: str,
        text: str,
        tool: str | None,
        *,
        whole: bool = True,
        tools: list[str] | None = None,
    ) -> None:
        """Remembers what the run read (`tool`: the tool whose result `text` is; None: the task,
        with the run's `tools`; `whole`: False when `text` is only the preview of a result the model
        reads in full)."""
        policy = self.catalog.policy(tenant_id)
        tracked = policy.tracks_taint(tools or ([tool] if tool else []))
        if not tracked and store.get(f"taint/{run_id}") is None:
            return  # the tenant tracks nothing and the run read no memory: no state, no cost
        # A subagent's answer (or task) may carry what it (or its parent) read from a private tool:
        # private too, else passing data through a child would declassify it.
        source = tool if tool is not None and (policy.is_private(tool) or tool == SPAWN_AGENT) else None
        store.put(f"taint/{run_id}", taint.learn(store.get(f"taint/{run_id}"), text, source, whole=whole))

    def _count(self, store: PartitionStore, run_id: str, run: dict[str, Any], tool: str, call_id: str) -> None:
        calls = run["counts"].setdefault(tool, [])
        if call_id not in calls:
            calls.append(call_id)
            store.put(f"run/{run_id}", run)

    # -- deciding -----------------------------------------------------------------------------------

    def _entry(self, tenant_id: str, run: dict[str, Any], tool: str) -> ToolEntry | None:
        # The exact tool the run pinned (owner, version, contract); a run started before pins
        # existed has only a version, resolved by name as it was then.
        pin = run.get("pins", {}).get(tool) or run["versions"].get(tool)
        return None if pin is None else resolve_pin(self.catalog, tenant_id, tool, pin)

    def _decide(self, store: PartitionStore, request: ToolCallRequested, run: dict[str, Any]) -> list[RunEvent]:
        entry = self._entry(request.tenant_id, run, request.tool)
        policy = self.catalog.policy(request.tenant_id)
        switched = None if entry is None else self.catalog.switched_off(entry)
        earlier = [c for c in run["counts"].get(request.tool, []) if c != request.call_id]
        leak = None
        if entry is not None and policy.tracks_taint(list(run["versions"])) and policy.is_egress(entry):
            leak = taint.find_leak(store.get(f"taint/{request.run_id}"), request.arguments_json)
        verdict = evaluate(request.tool, request.arguments_json, entry, switched, policy, len(earlier), leak)
        now = self.clock()
        version = run["versions"].get(request.tool, "")
        tier = entry.tier if entry is not None else "unknown"
        if verdict.decision != "deny":
            self._count(store, request.run_id, run, request.tool, request.call_id)
        if verdict.decision == "allow":
            # The authorization is the journaled decision (rule and reason included): one event
            # per allowed call, not two, on the path every tool call takes.
            _set_call(store, request.call_id, {"stage": "done"})
            return [self._authorize(request, entry, "policy", now, verdict.rule, verdict.reason)]
        decided = PolicyDecided(
            ids.policy_decided_id(request.call_id), request.run_id, request.tenant_id, request.step, request.call_id,
            request.tool, version, tier, verdict.decision, verdict.rule, verdict.reason, now,
        )  # fmt: skip
        if verdict.decision == "deny":
            _set_call(store, request.call_id, {"stage": "done"})
            return [decided, self._denial(request, f"DENIED by policy ({verdict.rule}): {verdict.reason}")]
        assert entry is not None
        expires = now + int(policy.approval_timeout_for(entry) * 1000)
        approval_id = ids.approval_id(request.call_id)
        _set_call(
            store,
            request.call_id,
            {"stage": "awaiting", "request": request.to_record(), "expires_ms": expires, "approval_id": approval_id},
        )
        asked = ApprovalRequested(
            ids.approval_requested_id(request.call_id), request.run_id, request.tenant_id, request.step,
            request.call_id, approval_id, request.tool, version, entry.tier, request.arguments_json,
            verdict.reason, now, expires,
        )  # fmt: skip
        return [decided, asked]

    def _on_decision(self, store: PartitionStore, event: ApprovalDecided, live: bool) -> Outcome:
        if not approval_verifies(self.approval, event):
            self.forged_approvals += 1  # decides nothing; counted on the processor's status
            return Outcome()
        self._timeouts_sent.discard(event.call_id)  # a timer denial read back needs no second sending
        call = store.get(f"call/{event.call_id}")
        if call is None or call["stage"] != "awaiting" or call.get("approval_id") != event.approval_id:
            return Outcome()  # the first decision won; later ones are on the record only
        call.update(stage="answered", approved=event.approved, decided_by=event.decided_by, reason=event.reason)
        _set_call(store, event.call_id, call)
        return Outcome(emit=self._answer(store, event.call_id, call)) if live else Outcome()

    def _answer(self, store: PartitionStore, call_id: str, call: dict[str, Any]) -> list[RunEvent]:
        request = ToolCallRequested(**call["request"])
        _set_call(store, call_id, {"stage": "done"})
        if not call["approved"]:
            who = "nobody decided in time" if call["decided_by"] == TIMEOUT else f"denied by {call['decided_by']}"
            return [self._denial(request, f"DENIED: approval for {request.tool} {who}: {call['reason']}")]
        run = store.get(f"run/{request.run_id}") or {"versions": {}}
        entry = self._entry(request.tenant_id, run, request.tool)
        if entry is None:
            return [self._denial(request, f"DENIED: {request.tool} is no longer registered")]
        by = f"approval:{call['decided_by']}"
        return [self._authorize(request, entry, by, self.clock(), "approval", f"approved by {call['decided_by']}")]

    def _authorize(
        self, request: ToolCallRequested, entry: ToolEntry | None, by: str, now: int, rule: str, reason: str
    ) -> RunEvent:
        assert entry is not None
        delegation = ""
        if entry.secrets:
            delegation = self.delegations.issue(
                request.tenant_id, request.run_id, request.call_id, request.tool, list(entry.scopes),
                list(entry.secrets), now, self.config.delegation_ttl_s, single_use=entry.tier == "irreversible",
                identity=identity_of(entry).text,
            )  # fmt: skip
        unsigned = ToolCallAuthorized(
            ids.authorized_id(request.call_id), request.run_id, request.tenant_id, request.step, request.call_id,
            # The full pin, under the capability's signature: the executor runs exactly this tool.
            request.tool_call_id, request.tool, pin_of(entry), request.arguments_json, request.idempotency_key,
            request.timeout_ms, by, now + self.config.capability_ttl_s * 1000, "", delegation, rule, reason,
        )  # fmt: skip
        return replace(unsigned, capability=sign_capability(self.capability, unsigned))

    @staticmethod
    def _denial(request: ToolCallRequested, content: str) -> RunEvent:
        return ToolCallCompleted(
            ids.completed_event_id(request.call_id), request.run_id, request.tenant_id, request.step,
            request.call_id, request.tool, request.idempotency_key, content, True, 0.0,
        )  # fmt: skip

    # -- after recovery, and the approval timer ---------------------------------------------------

    def resume(self, store: PartitionStore) -> Outcome:
        out = Outcome()
        for key in list(store.keys_with_prefix("call/")):
            call = store.get(key)
            if call is None:
                continue
            if call["stage"] == "requested":  # a decision that never reached the journal
                request = ToolCallRequested(**call["request"])
                run = store.get(f"run/{request.run_id}")
                if run is not None and not run["closed"]:
                    out.emit.extend(self._decide(store, request, run))
            elif call["stage"] == "answered":
                out.emit.extend(self._answer(store, key.removeprefix("call/"), call))
        return out

    def tick(self, store: PartitionStore, now_ms: int) -> Outcome:
        """Denies every approval whose deadline passed: an unanswered request is never approved."""
        out = Outcome()
        # Only the index of open approvals is scanned: a tick's cost does not grow with settled calls.
        for key in list(store.keys_with_prefix("awaiting/")):
            call_id = key.removeprefix("awaiting/")
            call = store.get(f"call/{call_id}")
            if call is None or call["stage"] != "awaiting" or call["expires_ms"] > now_ms:
                continue
            if call_id in self._timeouts_sent:
                continue
            self._timeouts_sent.add(call_id)
            request = call["request"]
            out.emit.append(
                signed_decision(
                    self.approval, run_id=request["run_id"], tenant_id=request["tenant_id"], call_id=call_id,
                    approval_id=call["approval_id"], approved=False, decided_by=TIMEOUT,
                    reason="no decision before the deadline", decided_ms=now_ms,
                )
            )  # fmt: skip
        return out


def _set_call(store: PartitionStore, call_id: str, call: dict[str, Any]) -> None:
    """Writes a call's state, keeping `awaiting/` an index of the calls with an open approval."""
    store.put(f"call/{call_id}", call)
    if call["stage"] == "awaiting":
        store.put(f"awaiting/{call_id}", call["expires_ms"])
    else:
        store.delete(f"awaiting/{call_id}")
