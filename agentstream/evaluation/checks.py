"""The step checks, each a pure function of what the run has seen and what the model did.

A check returns the findings it has (none for a clean step). `assess` runs the enabled ones and
turns a check that raises into a finding of its own (severity "error"), so a bug in a check, or an
input no check foresaw, never stops the run it judges.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson

from agentstream.evaluation.facts import Corpus, canonical_number, facts_in, number_of
from agentstream.evaluation.policy import EvalPolicy

CHECKS_VERSION = "1"  # bumped whenever a check's rule changes: a verdict says which rules judged
MAX_LEAVES = 256  # argument values read per call; a call with more is judged on its first ones
MAX_DEPTH = 32
EVIDENCE_CHARS = 300  # of any one value quoted in a verdict
_ATOMIC = re.compile(r"[\w.@:/+#-]{1,256}")
# Results that say "try again later": repeating the call that got one is waiting, not looping.
_TRANSIENT = re.compile(r"\b(?:429|503)\b|too many requests|rate.?limit|temporarily unavailable|retry later", re.I)


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    severity: str  # "warning", "critical", or "error" (the check itself failed)
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CallView:
    """One tool call as a check sees it. `error`: why it is invalid (never sent), or None."""

    tool: str
    arguments_json: str
    error: str | None = None


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= EVIDENCE_CHARS else text[:EVIDENCE_CHARS] + "…"


def schema(calls: Sequence[CallView]) -> list[Finding]:
    return [
        Finding("schema", "critical", f"{c.tool}: invalid call", {"tool": c.tool, "error": _short(c.error)})
        for c in calls
        if c.error is not None
    ]


def _exempt(sub: Any) -> list[Any]:
    """The values a schema itself offers (enum members, a const, a default): no source needed."""
    if not isinstance(sub, dict):
        return []
    out = list(sub.get("enum") or []) if isinstance(sub.get("enum"), list) else []
    out += [sub[k] for k in ("const", "default") if k in sub]
    return out


def _child(sub: Any, key: str | int) -> Any:
    if not isinstance(sub, dict):
        return None
    if isinstance(key, int):
        return sub.get("items")
    props = sub.get("properties")
    return props.get(key) if isinstance(props, dict) else None


def _leaves(arguments: Any, root: Any) -> list[tuple[str, Any, Any]]:
    """(path, value, its sub-schema) for each scalar in `arguments`, breadth first, bounded."""
    out: list[tuple[str, Any, Any]] = []
    queue: list[tuple[str, Any, Any, int]] = [("", arguments, root, 0)]
    while queue and len(out) < MAX_LEAVES:
        path, value, sub, depth = queue.pop(0)
        if isinstance(value, dict | list) and depth >= MAX_DEPTH:
            continue
        if isinstance(value, dict):
            queue.extend((f"{path}.{k}", v, _child(sub, str(k)), depth + 1) for k, v in value.items())
        elif isinstance(value, list):
            queue.extend((f"{path}[{i}]", v, _child(sub, i), depth + 1) for i, v in enumerate(value))
        else:
            out.append((path.lstrip("."), value, sub))
    return out


def _ungrounded(value: Any, sub: Any, corpus: Corpus) -> list[str]:
    """What in one argument value has no source: [] when it is grounded or trivial."""
    if value is None or isinstance(value, bool) or value in _exempt(sub):
        return []
    if isinstance(value, int | float):
        number = number_of(value)
        return [] if number is None or corpus.has_number(number) else [number]
    if not isinstance(value, str):
        return []
    text = value.strip()
    if len(text) < 3 or (canonical_number(text) is None and text.replace(",", "").replace(".", "").isdigit()):
        return []  # too short to carry a fact, or a small number
    if _ATOMIC.fullmatch(text):
        number = canonical_number(text)
        if corpus.has_text(text) or (number is not None and corpus.has_number(number)):
            return []
        return [text]
    return corpus.missing(facts_in(text))


def grounding(calls: Sequence[CallView], schemas: Mapping[str, Any], corpus: Corpus) -> list[Finding]:
    out = []
    for call in calls:
        if call.error is not None:
            continue  # never sent: the schema check has it
        try:
            arguments = orjson.loads(call.arguments_json)
        except orjson.JSONDecodeError:
            continue
        missing = {
            path or "(arguments)": _short(m)
            for path, value, sub in _leaves(arguments, schemas.get(call.tool))
            for m in _ungrounded(value, sub, corpus)
        }
        if missing and not corpus.partial:
            reason = f"{call.tool}: argument value(s) found in neither the task, an observation nor a constant"
            out.append(Finding("grounding", "warning", reason, {"tool": call.tool, "ungrounded": missing}))
    return out


def answer_facts(text: str, corpus: Corpus) -> list[Finding]:
    missing = corpus.missing(facts_in(text))
    if not missing or corpus.partial:
        return []
    reason = "the final answer states facts that no observation or the task holds"
    return [Finding("answer_facts", "warning", reason, {"unsupported": [_short(m) for m in missing[:20]]})]


@lru_cache(maxsize=256)
def _mention_patterns(names: tuple[str, ...]) -> tuple[tuple[str, re.Pattern[str]], ...]:
    out = []
    for name in names:
        spaced = re.escape(name).replace("_", "[_ ]").replace(r"\-", "[- ]")
        out.append((name, re.compile(rf"(?<![\w]){spaced}(?![\w])", re.I)))
    return tuple(out)


def intent(text: str, calls: Sequence[CallView], catalog: Sequence[str]) -> list[Finding]:
    """The text that comes with the calls names catalog tools, none of them one it calls."""
    if not text.strip() or not calls:
        return []
    head = text[:4000]
    named = [name for name, pattern in _mention_patterns(tuple(sorted(catalog))) if pattern.search(head)]
    called = {c.tool for c in calls}
    if not named or called & set(named):
        return []
    reason = f"the model said it would use {', '.join(named)} but called {', '.join(sorted(called))}"
    return [Finding("intent", "warning", reason, {"stated": named, "called": sorted(called), "text": _short(text)})]


def procedure(calls: Sequence[CallView], done: tuple[str, ...], policy: EvalPolicy) -> list[Finding]:
    out = []
    for call in calls:
        if call.error is not None:
            continue
        missing = policy.missing_before(call.tool, done)
        if missing:
            reason = f"{call.tool} requires an earlier successful call of {', '.join(missing)}"
            out.append(Finding("procedure", "critical", reason, {"tool": call.tool, "missing": missing}))
    return out


def transient(result: str, is_error: bool) -> bool:
    return is_error and _TRANSIENT.search(result[:2000]) is not None


def assess(policy: EvalPolicy, checks: Sequence[tuple[str, Callable[[], list[Finding]]]]) -> list[Finding]:
    """Runs each enabled check; one that raises is a finding of its own, and the rest still run."""
    out: list[Finding] = []
    for name, check in checks:
        if not policy.runs(name):
            continue
        try:
            out.extend(check())
        except Exception as exc:  # a check's bug must not become the run's failure
            reason = f"the {name} check failed: {type(exc).__name__}"
            out.append(Finding(name, "error", reason, {"error": _short(f"{type(exc).__name__}: {exc}")}))
    return out


@dataclass(frozen=True, slots=True)
class Outcome:
    """A call that ran, with its result: `signature` is the loop detector's (tool and canonical
    arguments, agentstream.processors.orchestrator.loops), so both judge "the same call" alike."""

    tool: str
    signature: str
    result: str
    is_error: bool


SEEN_KEEP = 64  # call-and-result digests remembered per run


def repetition(
    seen: tuple[str, ...], outcomes: Sequence[Outcome], policy: EvalPolicy
) -> tuple[tuple[str, ...], list[Finding]]:
    """The same call with the same result as before: it learned nothing new. Polling tools and
    "try again later" results are exempt. Returns the remembered digests and the findings."""
    out = []
    for o in outcomes:
        if not o.signature or policy.polls(o.tool) or transient(o.result, o.is_error):
            continue
        digest = o.signature + ":" + _digest(o.result)
        if digest in seen:
            reason = f"{o.tool}: the same call returned the same result again"
            out.append(Finding("repetition", "warning", reason, {"tool": o.tool, "result": _short(o.result)}))
        else:
            seen = (*seen, digest)[-SEEN_KEEP:]
    return seen, out


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
