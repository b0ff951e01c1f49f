"""Who may write each journal event, and the signature that proves who did.

One topic has many writers and a Kafka consumer cannot see a record's producer, so the record
carries its proof: a `writer` header naming the component and a `writer-sig` header,
`<key id>:<HMAC-SHA256>` under that writer's own journal key over (topic, key, type, writer,
value). The Kafka shell signs everything a component produces and checks everything it consumes
against `WRITERS` before the record is even decoded; a record that fails goes to the dead-letter
topic with the reason and never reaches a core. A `RunRequested` also carries `run-proof`, an
HMAC under the run-request key (held only by the gateway, the operator's tools and the
orchestrator) over its tenant, run id and body digest: a processor that can sign journal records
still cannot start a run, as any tenant.

Retirement is judged on the broker's append time (the journal is LogAppendTime), so a record
written before its key retired still verifies on every replay, and one written after never does.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Message

from agentstream.credentials.signing_keys import Keyring, journal_purpose
from agentstream.settings import ProcessSettings, once

WRITER_HEADER = "writer"
SIG_HEADER = "writer-sig"
RUN_PROOF_HEADER = "run-proof"
VIEW_HEADER = "view-sig"
# A second MAC on every record under a key all platform components share, the gateway included:
# it lets the gateway's projection, which holds no processor's key, tell the platform's records
# from a keyless client's. It proves "written by some platform component", never which one, so
# no processor acts on it.
VIEW_PURPOSE = "journal-view"
_DOMAIN = b"agentstream.journal.v1"
_RUN_PROOF_DOMAIN = b"agentstream.run-request.v1"

_ORCHESTRATOR = frozenset({"orchestrator"})
_CLIENTS = frozenset({"gateway", "admin"})
# Every journal event type and the components that may write it. A type missing here has no
# writer: its records are refused (a new event type must be added here and in the README).
WRITERS: dict[str, frozenset[str]] = {
    # Requests from outside: only through the gateway (for an authenticated tenant) or an operator.
    # ... and the orchestrator: a run starts and cancels its own subagents (processors/orchestrator/subagents.py).
    "RunRequested": _CLIENTS | _ORCHESTRATOR,
    "CancelRequested": _CLIENTS | _ORCHESTRATOR,
    "ResumeRequested": _CLIENTS,
    # A decision's own signature (approval key) says who decided; the timer's denial is the gate's.
    "ApprovalDecided": _CLIENTS | {"policy-gate"},
    "RunStarted": _ORCHESTRATOR,
    "LlmCallRequested": _ORCHESTRATOR,
    "ToolCallRequested": _ORCHESTRATOR,
    "RunCompleted": _ORCHESTRATOR,
    "RunFailed": _ORCHESTRATOR,
    "RunCancelled": _ORCHESTRATOR,
    "RunHalted": _ORCHESTRATOR,
    # The operator flags the runs a tool quarantine finds exposed (agentstream.quarantine).
    "RunFlagged": _ORCHESTRATOR | {"admin"},
    # A judge's grade, written by the operator's monitor from the judge run's answer (agentstream.judge).
    "JudgeVerdict": frozenset({"admin"}),
    "LoopDetected": _ORCHESTRATOR,
    "ContextCompacted": _ORCHESTRATOR,
    "EvalVerdict": _ORCHESTRATOR,  # the step checks run inside the orchestrator's fold
    "LlmCallCompleted": frozenset({"model-invoker"}),
    "LlmCallRouted": frozenset({"model-invoker"}),
    "LlmCallFailed": frozenset({"model-invoker", "kv-dispatcher"}),
    "LlmCallDispatched": frozenset({"kv-dispatcher"}),
    "PolicyDecided": frozenset({"policy-gate"}),
    "ApprovalRequested": frozenset({"policy-gate"}),
    "ToolCallAuthorized": frozenset({"policy-gate"}),
    # The executor's results, and the gate's refusals (a denied call's error observation).
    # The orchestrator's: a spawn_agent call's result (the child's end, or why it was refused), and
    # a run_code call's (its program's output: processors/orchestrator/codemode.py).
    "ToolCallCompleted": frozenset({"tool-executor", "policy-gate", "orchestrator"}),
    "BudgetReserved": frozenset({"cost-governor"}),
    "BudgetSettled": frozenset({"cost-governor"}),
    "BudgetExceeded": frozenset({"cost-governor"}),
}


def stand_in_writer(type_name: str) -> str:
    """A writer allowed for `type_name`: for the operator's tests and benches that stand in for a
    processor (they hold every key; nothing else can sign as another component)."""
    return min(WRITERS[type_name])


def journal_auth_enabled() -> bool:
    """`AGENTSTREAM_JOURNAL_AUTH=0` turns the checks off: for a throwaway deployment that shows an
    attack succeeding without them (the security bench's control run), never for a real one."""
    return once(ProcessSettings).journal_auth


_BASES: dict[bytes, hmac.HMAC] = {}


def _mac(key: bytes, topic: bytes, record_key: bytes, type_name: bytes, writer: bytes, value: bytes) -> str:
    # The keyed state is computed once per key and copied per record: a record costs one pass
    # over its bytes, not a key setup as well.
    base = _BASES.get(key)
    if base is None:
        base = _BASES[key] = hmac.new(key, _DOMAIN, hashlib.sha256)
    mac = base.copy()
    # Length-prefixed, so no two field lists (keys and values are arbitrary bytes) collide.
    mac.update(b"".join(len(f).to_bytes(8, "big") + f for f in (topic, record_key, type_name, writer)))
    mac.update(len(value).to_bytes(8, "big"))
    mac.update(value)
    return mac.hexdigest()


def _run_proof(key: bytes, tenant_id: str, run_id: str, value: bytes) -> str:
    digest = hashlib.sha256(value).digest()
    fields = (_RUN_PROOF_DOMAIN, tenant_id.encode(), run_id.encode(), digest)
    mac = hmac.new(key, b"", hashlib.sha256)
    for f in fields:
        mac.update(len(f).to_bytes(8, "big"))
        mac.update(f)
    return mac.hexdigest()


@dataclass(frozen=True)
class JournalSigner:
    """Signs the records one writer produces to the journal."""

    writer: str
    keyring: Keyring

    @property
    def proves_runs(self) -> bool:
        return "run-request" in self.keyring.purposes

    def headers(
        self, topic: str, key: bytes | None, type_name: str, value: bytes, *, as_writer: str | None = None
    ) -> list[tuple[str, bytes]]:
        writer = as_writer or self.writer
        signing = self.keyring.signing_key(journal_purpose(writer))
        fields = (topic.encode(), key or b"", type_name.encode(), writer.encode())
        headers = [
            (WRITER_HEADER, writer.encode()),
            (SIG_HEADER, f"{signing.kid}:{_mac(signing.key, *fields, value)}".encode()),
        ]
        if VIEW_PURPOSE in self.keyring.purposes:
            view = self.keyring.signing_key(VIEW_PURPOSE)
            headers.append((VIEW_HEADER, f"{view.kid}:{_mac(view.key, *fields, value)}".encode()))
        return headers

    def run_proof(self, tenant_id: str, run_id: str, value: bytes) -> tuple[str, bytes]:
        signing = self.keyring.signing_key("run-request")
        return RUN_PROOF_HEADER, f"{signing.kid}:{_run_proof(signing.key, tenant_id, run_id, value)}".encode()


def _headers(msg: Message) -> dict[str, bytes]:
    raw = msg.headers()
    if not isinstance(raw, list):
        return {}
    found: dict[str, bytes] = {}
    for k, v in raw:
        # A second copy of a header is never ours: refuse rather than pick one.
        if str(k) in found:
            found[str(k)] = b"\x00duplicate"
        elif isinstance(v, bytes):
            found[str(k)] = v
    return found


def _split(signature: bytes) -> tuple[str, str]:
    kid, _, mac = signature.decode(errors="replace").partition(":")
    return kid, mac


class JournalVerifier:
    """Checks a consumed journal record's writer and signature; `problem` says why it must not count."""

    def __init__(self, keyring: Keyring, *, require_run_proof: bool = False) -> None:
        self.keyring = keyring
        self.require_run_proof = require_run_proof

    def problem(self, msg: Message, type_name: str | None) -> str | None:
        if type_name is None:
            return "unsigned journal record: it has no type header"
        allowed = WRITERS.get(type_name)
        if allowed is None:
            return f"{type_name} may not be written to the journal by anyone (no writers in the trust table)"
        headers = _headers(msg)
        writer = headers.get(WRITER_HEADER, b"").decode(errors="replace")
        signature = headers.get(SIG_HEADER)
        if not writer or signature is None:
            return f"unsigned {type_name}: no writer signature (may be written only by {', '.join(sorted(allowed))})"
        if writer not in allowed:
            return f"{type_name} written by {writer!r}, which may not write it (only {', '.join(sorted(allowed))})"
        kid, mac = _split(signature)
        key = self.keyring.lookup(journal_purpose(writer), kid)
        if key is None:
            return f"{type_name} signed by {writer} with unknown key {kid!r}"
        appended_ms = _append_time(msg)
        if key.retired_at(appended_ms):
            return f"{type_name} signed by {writer} with key {kid}, retired before the record was written"
        value = msg.value() or b""
        expected = _mac(
            key.key, str(msg.topic()).encode(), msg.key() or b"", type_name.encode(), writer.encode(), value
        )
        if not hmac.compare_digest(expected, mac):
            return f"{type_name} claims writer {writer} but its signature does not verify (forged or altered)"
        return None

    def run_proof_problem(self, msg: Message, tenant_id: str, run_id: str) -> str | None:
        """For a verified RunRequested: proof that the gateway or an operator created it for this tenant."""
        proof = _headers(msg).get(RUN_PROOF_HEADER)
        if proof is None:
            return f"RunRequested for tenant {tenant_id} carries no run-request proof"
        kid, mac = _split(proof)
        key = self.keyring.lookup("run-request", kid)
        if key is None or key.retired_at(_append_time(msg)):
            return f"RunRequested for tenant {tenant_id}: run-request key {kid!r} is unknown or retired"
        if not hmac.compare_digest(_run_proof(key.key, tenant_id, run_id, msg.value() or b""), mac):
            return f"RunRequested's run-request proof does not verify for tenant {tenant_id} and run {run_id}"
        return None


class ViewVerifier:
    """What the gateway's projection can check: a record comes from a platform component (its
    view signature), from a writer allowed for its type (as the record claims), and a RunRequested
    carries a valid run-request proof. Not that the named writer made it."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring
        self._runs = JournalVerifier(keyring)

    def problem(self, msg: Message) -> str | None:
        headers = _headers(msg)
        type_name = headers.get("type", b"").decode(errors="replace")
        writer = headers.get(WRITER_HEADER, b"").decode(errors="replace")
        if writer not in WRITERS.get(type_name, ()):
            return f"{type_name or 'untyped record'} from {writer or 'no writer'}"
        kid, mac = _split(headers.get(VIEW_HEADER, b""))
        key = self.keyring.lookup(VIEW_PURPOSE, kid)
        if key is None or key.retired_at(_append_time(msg)):
            return f"{type_name} without a valid view signature"
        fields = (str(msg.topic()).encode(), msg.key() or b"", type_name.encode(), writer.encode(), msg.value() or b"")
        if not hmac.compare_digest(_mac(key.key, *fields), mac):
            return f"{type_name}'s view signature does not verify"
        return None

    def run_proof_problem(self, msg: Message, tenant_id: str, run_id: str) -> str | None:
        return self._runs.run_proof_problem(msg, tenant_id, run_id)


def _append_time(msg: Message) -> int:
    kind, ts = msg.timestamp()
    if kind == TIMESTAMP_LOG_APPEND_TIME and ts > 0:
        return int(ts)
    # A producer-chosen timestamp proves nothing: judge retirement by the present instead.
    return int(time.time() * 1000)
