"""The policy gate without Kafka: the pure rules (`evaluate`), and the core over a real partition
store, with its decisions read back as the journal would. Covers every rule and its reason, the
approval timer, forged and late decisions, replay, and the data-flow taint of the run context."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from agentstream import ids
from agentstream.credentials.delegation import DelegationIssuer
from agentstream.events import (
    ApprovalDecided,
    ApprovalRequested,
    PolicyDecided,
    RunCompleted,
    RunEvent,
    RunRequested,
    RunStarted,
    ToolCallAuthorized,
    ToolCallCompleted,
    ToolCallRequested,
    ToolSwitched,
)
from agentstream.kafka.state import PartitionStore
from agentstream.processors.policy_gate import taint
from agentstream.processors.policy_gate.core import PolicyGateCore
from agentstream.processors.policy_gate.rules import Verdict, evaluate
from agentstream.processors.policy_gate.taint import Leak
from agentstream.registry.catalog import ToolCatalog
from agentstream.registry.entry import TenantPolicy, ToolEntry
from agentstream.security.signing import TIMEOUT, Signer, capability_verifies, signed_decision

NOW = 1_800_000_000_000
TENANT = "acme"
SECRET = "ACCT-4417-2093-8861"  # a private value the run reads: 16 letters and digits folded


def _schema(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


PAY = ToolEntry("pay", "Pay.", _schema({"to": {"type": "string"}, "cents": {"type": "integer", "maximum": 100_000}}),
                "irreversible", {"kind": "builtin"}, scopes=("payments",))  # fmt: skip
LOOKUP = ToolEntry("lookup", "Look up.", _schema({"q": {"type": "string", "maxLength": 40}}), "read_only",
                   {"kind": "builtin"})  # fmt: skip
FETCH = ToolEntry("fetch", "Fetch a URL.", _schema({"url": {"type": "string"}}), "read_only", {"kind": "builtin"},
                  egress=("docs.example",))  # fmt: skip
SHARE = ToolEntry("share", "Share.", _schema({"doc": {"type": "string"}}), "reversible", {"kind": "builtin"})
ACCOUNT = ToolEntry("account", "Account details.", _schema({}), "read_only", {"kind": "builtin"})
ENTRIES = (PAY, LOOKUP, FETCH, SHARE, ACCOUNT)
TAINTED = TenantPolicy(private_tools=("account",), egress_tools=("share",))


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> int:
        return self.now


class Gate:
    """A gate core over one real partition store, fed like the shell feeds it: each emitted event
    is read back as the next journal record (the gate consumes its own decisions)."""

    def __init__(self, store: PartitionStore, policy: TenantPolicy) -> None:
        self.catalog = ToolCatalog()
        for entry in ENTRIES:
            self.catalog.apply(entry.to_event())
        self.catalog.policies[TENANT] = policy
        self.approval = Signer(b"a" * 32)
        self.capability = Signer(b"c" * 32)
        self.clock = Clock()
        self.store = store
        self.core = self._core()
        self.journal: list[RunEvent] = []

    def _core(self) -> PolicyGateCore:
        return PolicyGateCore(self.catalog, self.capability, self.approval, DelegationIssuer(b"d" * 32), self.clock)

    def feed(self, *events: RunEvent, live: bool = True) -> list[RunEvent]:
        out: list[RunEvent] = []
        queue = list(events)
        while queue:
            event = queue.pop(0)
            self.journal.append(event)
            emitted = self.core.apply(self.store, event, live=live).emit
            out += emitted
            queue += emitted
        return out

    def start(self, run: str = "r1", task: str = "please help") -> None:
        versions = {e.name: e.version for e in ENTRIES}
        self.feed(RunRequested(ids.run_requested_id(run), run, TENANT, task, "m", list(versions), 10, run),
                  RunStarted(ids.run_started_id(run), run, TENANT, "m", "[]", 10, "", versions))  # fmt: skip

    def call(self, tool: str, args: dict[str, Any], run: str = "r1", step: int = 1, index: int = 0) -> list[RunEvent]:
        return self.feed(request(tool, args, run, step, index))

    def result(self, tool: str, content: str, run: str = "r1", step: int = 1, index: int = 9) -> None:
        call = ids.tool_call_id(run, step, index)
        self.feed(ToolCallCompleted(ids.completed_event_id(call), run, TENANT, step, call, tool, call, content,
                                    False, 1.0))  # fmt: skip

    def tick(self, now_ms: int) -> list[RunEvent]:
        return self.core.tick(self.store, now_ms).emit


def request(tool: str, args: dict[str, Any], run: str = "r1", step: int = 1, index: int = 0) -> ToolCallRequested:
    call = ids.tool_call_id(run, step, index)
    return ToolCallRequested(ids.requested_event_id(call), run, TENANT, step, call, f"tc{index}", tool,
                             orjson.dumps(args).decode(), call, 5_000)  # fmt: skip


T = TypeVar("T")


def decided(events: list[RunEvent]) -> PolicyDecided:
    """The gate's journaled decision among `events` (an allowed call has none: its authorization is it)."""
    found = of_type(events, PolicyDecided)
    assert len(found) == 1, events
    return found[0]


def of_type(events: list[RunEvent], kind: type[T]) -> list[T]:
    return [e for e in events if isinstance(e, kind)]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PartitionStore]:
    opened = PartitionStore(tmp_path / "gate")
    yield opened
    opened.close()


# -- the rules, pure ------------------------------------------------------------------------------


def judge(tool: str, args: dict[str, Any], policy: TenantPolicy | None = None, *, calls_so_far: int = 0,
          switched: ToolSwitched | None = None, leak: Leak | None = None, known: bool = True) -> Verdict:  # fmt: skip
    entry = next((e for e in ENTRIES if e.name == tool), None) if known else None
    return evaluate(tool, orjson.dumps(args).decode(), entry, switched, policy or TenantPolicy(), calls_so_far, leak)


GOOD_PAY = {"to": "UTILITY-CO", "cents": 500}
OFF = ToolSwitched("tool/_platform/lookup", "", "lookup", True, "incident 42", "ops", NOW)
LEAK = Leak("url", 16, ("account",))
RULES: list[tuple[str, Verdict, str, str]] = [
    # (case, verdict, decision, rule)
    ("unknown", judge("lookup", {"q": "x"}, known=False), "deny", "unknown_tool"),
    ("kill switch", judge("lookup", {"q": "x"}, switched=OFF), "deny", "kill_switch"),
    ("kill switch beats auto-approve", judge("pay", GOOD_PAY, TenantPolicy(auto_approve=("pay",)),
                                             switched=replace(OFF, name="pay")), "deny", "kill_switch"),
    ("deny list", judge("lookup", {"q": "x"}, TenantPolicy(deny=("lookup",))), "deny", "tenant_deny"),
    ("deny beats allow", judge("lookup", {"q": "x"}, TenantPolicy(allow=("lookup",), deny=("lookup",))), "deny",
     "tenant_deny"),
    ("off the allow list", judge("lookup", {"q": "x"}, TenantPolicy(allow=("fetch",))), "deny", "not_allowed"),
    ("on the allow list", judge("lookup", {"q": "x"}, TenantPolicy(allow=("lookup",))), "allow", "tier"),
    ("missing argument", judge("pay", {"to": "x"}), "deny", "arguments"),
    ("argument over its maximum", judge("pay", {"to": "x", "cents": 100_001}), "deny", "arguments"),
    ("argument too long", judge("lookup", {"q": "x" * 41}), "deny", "arguments"),
    ("extra argument", judge("lookup", {"q": "x", "sudo": True}), "deny", "arguments"),
    ("scope not granted", judge("pay", GOOD_PAY, TenantPolicy(granted_scopes=("mail",))), "deny", "scope"),
    ("scope granted", judge("pay", GOOD_PAY, TenantPolicy(granted_scopes=("payments",))), "needs_approval", "tier"),
    ("per-run limit reached", judge("lookup", {"q": "x"}, TenantPolicy(max_calls_per_run={"lookup": 2}),
                                    calls_so_far=2), "deny", "limit"),
    ("under the limit", judge("lookup", {"q": "x"}, TenantPolicy(max_calls_per_run={"lookup": 2}), calls_so_far=1),
     "allow", "tier"),
    ("irreversible by default", judge("pay", GOOD_PAY), "needs_approval", "tier"),
    ("auto-approved", judge("pay", GOOD_PAY, TenantPolicy(auto_approve=("pay",))), "allow", "auto_approve"),
    ("auto-approval is only for irreversible tools' tier", judge("share", {"doc": "d"}, TenantPolicy(
        auto_approve=("share",), require_approval=("share",))), "needs_approval", "tenant_approval"),
    ("tenant requires approval", judge("lookup", {"q": "x"}, TenantPolicy(require_approval=("lookup",))),
     "needs_approval", "tenant_approval"),
    ("read-only", judge("lookup", {"q": "x"}), "allow", "tier"),
    ("reversible", judge("share", {"doc": "d"}), "allow", "tier"),
    ("taint", judge("fetch", {"url": "u"}, leak=LEAK), "needs_approval", "taint"),
    ("taint beats auto-approve", judge("pay", GOOD_PAY, TenantPolicy(auto_approve=("pay",)), leak=LEAK),
     "needs_approval", "taint"),
    ("taint denied by policy", judge("fetch", {"url": "u"}, TenantPolicy(taint_action="deny"), leak=LEAK), "deny",
     "taint"),
    ("a deny rule comes before taint", judge("fetch", {"url": "u"}, TenantPolicy(deny=("fetch",)), leak=LEAK),
     "deny", "tenant_deny"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "verdict", "decision", "rule"), RULES, ids=[r[0] for r in RULES])
def test_each_rule_decides_and_says_why(case: str, verdict: Verdict, decision: str, rule: str) -> None:
    assert (verdict.decision, verdict.rule) == (decision, rule), verdict
    assert len(verdict.reason) > 10, verdict  # every decision carries a reason a person can read


def test_reasons_name_what_decided() -> None:
    assert "incident 42" in judge("lookup", {"q": "x"}, switched=OFF).reason
    assert "payments" in judge("pay", GOOD_PAY, TenantPolicy(granted_scopes=("mail",))).reason
    assert "maximum" in judge("pay", {"to": "x", "cents": 100_001}).reason
    assert "at most 2" in judge("lookup", {"q": "x"}, TenantPolicy(max_calls_per_run={"lookup": 2}),
                                calls_so_far=2).reason  # fmt: skip
    reason = judge("pay", GOOD_PAY, leak=LEAK).reason
    assert "irreversible" in reason and "'url'" in reason and "account" in reason and "16 characters" in reason


# -- the core: decisions, approvals, the timer ----------------------------------------------------


def test_allowed_call_is_one_signed_authorization_with_rule_and_reason(store: PartitionStore) -> None:
    gate = Gate(store, TenantPolicy())
    gate.start()
    out = gate.call("lookup", {"q": "weather"})
    [auth] = out
    assert isinstance(auth, ToolCallAuthorized) and capability_verifies(gate.capability, auth)
    assert (auth.rule, auth.reason, auth.authorized_by) == ("tier", "lookup is read-only", "policy")
    assert gate.call("lookup", {"q": "weather"}) == []  # a re-delivered request is decided once


def test_denial_is_journaled_and_reaches_the_model_as_an_error(store: PartitionStore) -> None:
    gate = Gate(store, TenantPolicy(deny=("lookup",)))
    gate.start()
    out = gate.call("lookup", {"q": "x"})
    policy = decided(out)
    assert (policy.decision, policy.rule) == ("deny", "tenant_deny") and policy.reason
    [observation] = of_type(out, ToolCallCompleted)
    assert observation.is_error and observation.content.startswith("DENIED by policy (tenant_deny)")
    assert not of_type(out, ToolCallAuthorized)
    # A tool the run did not pin is unknown, even when the catalog has it.
    gate.feed(RunStarted(ids.run_started_id("r2"), "r2", TENANT, "m", "[]", 10, "", {"lookup": "1"}))
    assert decided(gate.call("pay", GOOD_PAY, run="r2")).rule == "unknown_tool"
    # The kill switch takes effect on the next call.
    gate.catalog.apply(OFF)
    out = gate.call("lookup", {"q": "x"}, run="r2", index=1)
    assert decided(out).rule == "kill_switch" and "incident 42" in of_type(out, ToolCallCompleted)[0].content


def test_irreversible_call_waits_for_a_person_and_runs_once_approved(store: PartitionStore) -> None:
    gate = Gate(store, TenantPolicy(approval_timeout_s=60))
    gate.start()
    out = gate.call("pay", GOOD_PAY)
    [ask] = of_type(out, ApprovalRequested)
    assert decided(out).decision == "needs_approval"
    assert ask.expires_ms == NOW + 60_000 and "irreversible" in ask.reason
    assert not of_type(out, ToolCallAuthorized)
    yes = signed_decision(gate.approval, run_id="r1", tenant_id=TENANT, call_id=ask.call_id,
                          approval_id=ask.approval_id, approved=True, decided_by="alice", reason="ok",
                          decided_ms=NOW + 1_000)  # fmt: skip
    [auth] = gate.feed(yes)
    assert isinstance(auth, ToolCallAuthorized) and auth.authorized_by == "approval:alice"
    assert capability_verifies(gate.capability, auth)
    # The first decision won: a later denial, a repeat, and the timer all change nothing.
    no = signed_decision(gate.approval, run_id="r1", tenant_id=TENANT, call_id=ask.call_id,
                         approval_id=ask.approval_id, approved=False, decided_by="bob", reason="no",
                         decided_ms=NOW + 2_000)  # fmt: skip
    assert gate.feed(no) == [] and gate.feed(yes) == []
    assert gate.tick(NOW + 3_600_000) == []


def test_timer_denies_at_the_deadline_and_never_approves(store: PartitionStore) -> None:
    gate = Gate(store, TenantPolicy(approval_timeout_s=30))
    gate.start()
    [ask] = of_type(gate.call("pay", GOOD_PAY), ApprovalRequested)
    assert gate.tick(NOW) == [] and gate.tick(ask.expires_ms - 1) == []  # before it, a person may still answer
    [timeout] = gate.tick(ask.expires_ms)
    assert isinstance(timeout, ApprovalDecided)
    assert (timeout.approved, timeout.decided_by) == (False, TIMEOUT)
    assert gate.tick(ask.expires_ms + 2) == []  # sent once, not once per tick
    [observation] = gate.feed(timeout)
    assert isinstance(observation, ToolCallCompleted) and observation.is_error
    assert "nobody decided in time" in observation.content
    late = signed_decision(gate.approval, run_id="r1", tenant_id=TENANT, call_id=ask.call_id,
                           approval_id=ask.approval_id, approved=True, decided_by="alice", reason="sorry, late",
                           decided_ms=ask.expires_ms + 5)  # fmt: skip
    assert gate.feed(late) == [] and gate.tick(ask.expires_ms + 10_000) == []
    assert not of_type(gate.journal, ToolCallAuthorized)


def test_forged_or_unsigned_decisions_and_authorizations_are_ignored(store: PartitionStore) -> None:
    gate = Gate(store, TenantPolicy(approval_timeout_s=30))
    gate.start()
    [ask] = of_type(gate.call("pay", GOOD_PAY), ApprovalRequested)
    genuine = signed_decision(gate.approval, run_id="r1", tenant_id=TENANT, call_id=ask.call_id,
                              approval_id=ask.approval_id, approved=True, decided_by="alice", reason="ok",
                              decided_ms=NOW)  # fmt: skip
    unsigned = replace(genuine, signature="")
    other_key = signed_decision(Signer(b"x" * 32), run_id="r1", tenant_id=TENANT, call_id=ask.call_id,
                                approval_id=ask.approval_id, approved=True, decided_by="alice", reason="ok",
                                decided_ms=NOW)  # fmt: skip
    altered = replace(genuine, decided_by="mallory")  # the signature covers the decider
    assert gate.feed(unsigned, other_key, altered) == []
    assert gate.core.forged_approvals == 3
    forged_auth = ToolCallAuthorized(
        ids.authorized_id(ask.call_id), "r1", TENANT, 1, ask.call_id, "tc0", "pay", "1",
        orjson.dumps(GOOD_PAY).decode(), ask.call_id, 5_000, "policy", NOW + 300_000, "f" * 64, "",
    )  # fmt: skip
    assert gate.feed(forged_auth) == []
    # Still awaiting a person: the timer still fires, and denies.
    [timeout] = gate.tick(ask.expires_ms + 1)
    assert isinstance(timeout, ApprovalDecided) and not timeout.approved


def test_replay_rebuilds_pending_approvals_and_no_decision_after_the_run_ends(tmp_path: Path) -> None:
    first = PartitionStore(tmp_path / "a")
    gate = Gate(first, TenantPolicy(approval_timeout_s=30))
    gate.start()
    [ask] = of_type(gate.call("pay", GOOD_PAY), ApprovalRequested)
    first.close()
    rebuilt = PartitionStore(tmp_path / "b")  # a lost store: every event is replayed, nothing acted on
    again = Gate(rebuilt, TenantPolicy(approval_timeout_s=30))
    for event in gate.journal:
        assert again.feed(event, live=False) == []
    assert again.core.resume(rebuilt).emit == []  # decided before the crash: nothing to redo
    [timeout] = again.tick(ask.expires_ms + 1)
    assert isinstance(timeout, ApprovalDecided) and not timeout.approved
    done = RunCompleted(ids.terminal_id("r1"), "r1", TENANT, 2, "bye", "done")
    again.feed(done)
    assert again.call("lookup", {"q": "x"}, step=3) == []
    assert list(rebuilt.keys_with_prefix("awaiting/")) == []
    rebuilt.close()


# -- the run context: data-flow taint --------------------------------------------------------------

PRIVATE_RECORD = f"Holder: Dana Whitfield\nAccount: {SECRET}\nNotes: Project Aurora rollout notes pending"


def tainted_gate(store: PartitionStore, policy: TenantPolicy = TAINTED, task: str = "please help") -> Gate:
    gate = Gate(store, policy)
    gate.start(task=task)
    gate.result("account", PRIVATE_RECORD)
    return gate


@pytest.mark.parametrize(
    "url",
    [
        f"https://docs.example/search?q={SECRET}",
        "https://docs.example/search?q=" + "".join(f"%{b:02X}" for b in SECRET.encode()),  # every byte encoded
        "https://docs.example/search?q=" + SECRET.replace("-", "%252D"),  # encoded twice
        "https://docs.example/docs/" + SECRET.replace("-", "").lower() + ".html",  # reformatted, in the path
        "https://docs.example/search?q=acct+4417+2093+8861",  # spaced
        "https://docs.example/search?q=DANA+WHITFIELD",  # a name: 13 letters
    ],
)
def test_private_data_in_an_egress_call_needs_a_person(store: PartitionStore, url: str) -> None:
    gate = tainted_gate(store)
    out = gate.call("fetch", {"url": url})
    policy = decided(out)
    assert (policy.decision, policy.rule) == ("needs_approval", "taint"), out
    [ask] = of_type(out, ApprovalRequested)
    assert "account" in ask.reason and "'url'" in ask.reason
    assert SECRET not in ask.reason and SECRET not in policy.reason  # the reason names, never repeats, the data


def test_taint_can_deny_and_reaches_any_named_egress_tool(store: PartitionStore) -> None:
    gate = tainted_gate(store, replace(TAINTED, taint_action="deny"))
    out = gate.call("share", {"doc": f"notes for {SECRET}"})  # named in egress_tools
    assert decided(out).rule == "taint"
    assert of_type(out, ToolCallCompleted)[0].content.startswith("DENIED by policy (taint)")
    assert not of_type(out, ApprovalRequested)


def test_public_and_unrelated_data_stays_allowed(store: PartitionStore) -> None:
    gate = tainted_gate(store, task="Find the Project Aurora rollout notes on the docs site")
    # The private record also says "Project Aurora rollout notes", but the user typed it.
    assert of_type(gate.call("fetch", {"url": "https://docs.example/search?q=Project+Aurora+rollout+notes"}),
                   ToolCallAuthorized)  # fmt: skip
    assert of_type(gate.call("fetch", {"url": "https://docs.example/search?q=kafka+retention"}, index=1),
                   ToolCallAuthorized)  # fmt: skip
    # A tool that cannot send data out is not checked: the data stays inside.
    assert of_type(gate.call("lookup", {"q": SECRET}, index=2), ToolCallAuthorized)
    # What a public page showed is public, even if a private result holds it too.
    gate.result("fetch", "Release index: Dana Whitfield wrote the onboarding guide", index=8)
    assert of_type(gate.call("fetch", {"url": "https://docs.example/search?q=Dana+Whitfield"}, index=3),
                   ToolCallAuthorized)  # fmt: skip
    # ...while the account number, in no public source, is still private.
    assert decided(gate.call("fetch", {"url": f"https://docs.example/q?{SECRET}"}, index=4)).rule == "taint"


def test_no_private_tools_means_no_tracking(store: PartitionStore) -> None:
    gate = tainted_gate(store, TenantPolicy())
    assert list(store.keys_with_prefix("taint/")) == []
    assert of_type(gate.call("fetch", {"url": f"https://docs.example/?q={SECRET}"}), ToolCallAuthorized)


def test_another_run_is_not_tainted_by_this_one(store: PartitionStore) -> None:
    gate = tainted_gate(store)
    gate.start(run="r2")
    assert of_type(gate.call("fetch", {"url": f"https://docs.example/?q={SECRET}"}, run="r2"), ToolCallAuthorized)
    assert decided(gate.call("fetch", {"url": f"https://docs.example/?q={SECRET}"})).rule == "taint"


def test_taint_state_is_rebuilt_by_replay_and_dropped_when_the_run_ends(tmp_path: Path) -> None:
    live = PartitionStore(tmp_path / "live")
    gate = tainted_gate(live)
    live.close()
    rebuilt = PartitionStore(tmp_path / "rebuilt")
    again = Gate(rebuilt, TAINTED)
    for event in gate.journal:
        again.feed(event, live=False)
    assert decided(again.call("fetch", {"url": f"https://docs.example/?q={SECRET}"})).rule == "taint"
    again.feed(RunCompleted(ids.terminal_id("r1"), "r1", TENANT, 2, "bye", "done"))
    assert list(rebuilt.keys_with_prefix("taint/")) == []
    # A re-delivered RunRequested after the end leaves nothing behind.
    again.feed(gate.journal[0])
    assert list(rebuilt.keys_with_prefix("taint/")) == []
    rebuilt.close()


def test_taint_state_is_bounded_and_fails_closed(store: PartitionStore) -> None:
    gate = tainted_gate(store)
    huge = " ".join(f"row {i:06d} balance {i * 7919 % 100_003:06d}" for i in range(1_000))  # ~30k windows
    gate.result("account", huge, index=8)
    state = store.get("taint/r1")
    assert state is not None and state["overflow"]
    assert sum(len(h) for h in state["private"].values()) <= taint.MAX_PRIVATE
    out = gate.call("fetch", {"url": "https://docs.example/?q=weather"})  # carries nothing: still asks
    assert decided(out).rule == "taint" and "more private data" in of_type(out, ApprovalRequested)[0].reason
    # Re-reading the same result adds nothing (idempotent under re-delivery).
    before = orjson.loads(orjson.dumps(store.get("taint/r1")))
    gate.result("account", PRIVATE_RECORD)
    assert store.get("taint/r1") == before


def test_fold_and_find_leak() -> None:
    assert taint.fold("ACCT%2D4417-2093&#45;8861") == "acct441720938861"
    state = taint.learn(None, PRIVATE_RECORD, "account")
    state = taint.learn(state, "Project Aurora rollout notes", None)
    leak = taint.find_leak(state, orjson.dumps({"a": {"b": [f"x {SECRET} y"]}, "c": "Project Aurora"}).decode())
    assert leak is not None and leak.argument == "a.b[0]" and leak.chars == 16 and leak.sources == ("account",)
    assert taint.find_leak(state, '{"q": "Project Aurora rollout notes"}') is None
    assert taint.find_leak(state, '{"q": "ACCT-4417"}') is None  # 8 characters: under the window
    assert taint.find_leak(state, orjson.dumps({SECRET: 1}).decode()) is not None  # keys are arguments too
    assert taint.find_leak(None, '{"q": "x"}') is None


def test_the_taint_policy_round_trips_and_an_unknown_action_is_the_strictest() -> None:
    policy = replace(TAINTED, taint_action="deny")
    assert TenantPolicy.from_json(policy.to_json()) == policy
    raw = orjson.loads(TAINTED.to_json())
    assert TenantPolicy.from_json(orjson.dumps({**raw, "taint_action": "shrug"}).decode()).taint_action == "deny"
    legacy = {k: v for k, v in raw.items() if k not in ("private_tools", "egress_tools", "taint_action")}
    assert TenantPolicy.from_json(orjson.dumps(legacy).decode()).private_tools == ()  # older policies track nothing
    assert TAINTED.is_private("account") and not TAINTED.is_private("fetch")
    assert TenantPolicy(private_tools=("*",)).is_private("anything")
    assert TAINTED.is_egress(FETCH) and TAINTED.is_egress(SHARE) and not TAINTED.is_egress(LOOKUP)


# -- subagents (issue 19) ---------------------------------------------------------------------------


def test_a_spawn_is_not_a_tool_call_for_the_gate(store: PartitionStore) -> None:
    gate = tainted_gate(store)
    assert gate.call("spawn_agent", {"task": f"look into {SECRET}"}) == []  # the child's own calls are gated


def test_data_passed_through_a_subagent_stays_private_both_ways(store: PartitionStore) -> None:
    gate = tainted_gate(store)
    # The parent's answer from a child that read the private record is no declassification.
    gate.result("spawn_agent", f"the child found account {SECRET}", index=7)
    assert decided(gate.call("fetch", {"url": f"https://docs.example/q?{SECRET}"})).rule == "taint"
    # A child's task is its parent's words, which may hold what the parent read: private in the child.
    child = "run_child"
    gate.feed(RunRequested(ids.run_requested_id(child), child, TENANT, f"check account {SECRET}", "m", ["fetch"],
                           3, child, parent_run_id="r1", parent_call_id="r1/s0001/tool00", depth=1),
              RunStarted(ids.run_started_id(child), child, TENANT, "m", "[]", 3, "",
                         {e.name: e.version for e in ENTRIES}))  # fmt: skip
    assert decided(gate.call("fetch", {"url": f"https://docs.example/q?{SECRET}"}, run=child)).rule == "taint"
