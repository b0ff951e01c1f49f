"""The step checks' pure core (agentstream.evaluation): each check, and the inputs a model or a tool
controls at their worst."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import orjson
import pytest

from agentstream.cli.main import parser
from agentstream.config import ModelSettings, Settings
from agentstream.evaluation import EvalPolicyError, parse_policy
from agentstream.evaluation import checks as c
from agentstream.evaluation.checks import CallView, Outcome
from agentstream.evaluation.facts import Corpus, canonical_number, facts_in
from agentstream.evaluation.policy import NO_POLICY, pinned_policy
from agentstream.registry.admin import RegistryError, set_policy
from agentstream.registry.entry import TenantPolicy

PAY_SCHEMA = {
    "type": "object",
    "properties": {
        "to_account": {"type": "string"},
        "amount_cents": {"type": "integer"},
        "currency": {"type": "string", "enum": ["EUR", "USD"], "default": "EUR"},
        "urgent": {"type": "boolean"},
    },
}
TASK = "Pay Acme Corp the 1,200.50 invoice INV-778 to ACCT-0042."


def pay(**arguments: object) -> CallView:
    return CallView("pay", orjson.dumps(arguments).decode())


def test_numbers_are_compared_in_one_form() -> None:
    assert canonical_number("1,200") == canonical_number("1200") == canonical_number("1200.00") == "1200"
    assert canonical_number("0012.50") == "12.5"
    assert canonical_number("42") is None  # small integers are not facts
    corpus = Corpus.of(["total: 1200 EUR"])
    assert corpus.missing(facts_in("It came to 1,200.00 euros.")) == []
    assert corpus.missing(facts_in("It came to 1,300 euros.")) == ["1300"]


def test_grounded_arguments_pass_and_invented_ones_are_named() -> None:
    corpus = Corpus.of([TASK, "invoice INV-778: 120050 cents due"])
    clean = pay(to_account="ACCT-0042", amount_cents=120050, currency="USD", urgent=True)
    assert c.grounding([clean], {"pay": PAY_SCHEMA}, corpus) == []
    bad = pay(to_account="ACCT-0043", amount_cents=999999)
    [finding] = c.grounding([bad], {"pay": PAY_SCHEMA}, corpus)
    assert finding.check == "grounding" and finding.evidence["ungrounded"] == {
        "to_account": "ACCT-0043",
        "amount_cents": "999999",
    }


def test_free_text_arguments_are_judged_by_their_facts() -> None:
    corpus = Corpus.of([TASK])
    assert c.grounding([pay(to_account="ACCT-0042", memo="invoice INV-778 for Acme Corp")], {}, corpus) == []
    [finding] = c.grounding([pay(to_account="ACCT-0042", memo="invoice INV-779 for Acme Corp")], {}, corpus)
    assert finding.evidence["ungrounded"] == {"memo": "inv-779"}


def test_declared_constants_ground_an_argument() -> None:
    policy = parse_policy({"constants": ["Europe/Lisbon"]})
    without = c.grounding([CallView("t", '{"zone": "Europe/Lisbon"}')], {}, Corpus.of([TASK]))
    with_constant = c.grounding([CallView("t", '{"zone": "Europe/Lisbon"}')], {}, Corpus.of([TASK, *policy.constants]))
    assert len(without) == 1 and with_constant == []


def test_what_cannot_be_seen_is_unknown_not_absent() -> None:
    offloaded = Corpus.of([TASK, "first 200 characters of a large result …"], partial=True)
    assert c.grounding([pay(to_account="ACCT-9999")], {}, offloaded) == []
    assert c.answer_facts("Paid 31,337 to ACCT-9999.", offloaded) == []


def test_worst_arguments_are_bounded_and_never_raise() -> None:
    corpus = Corpus.of([TASK])
    deep = '{"x":' * 500 + '"ACCT-9999"' + "}" * 500  # deeper than the walk reads
    deeper = "[" * 5000 + "]" * 5000  # deeper than the JSON parser accepts
    huge = orjson.dumps({"blob": "Acme Corp " * 200_000, "ids": [f"ID-{i}" for i in range(10_000)]}).decode()
    odd = orjson.dumps({"name": "Zoë Ålander", "note": "価格は 1,200.50 円 ACCT-0042 🚀", "n": 1e308}).decode()
    for raw in (deep, deeper, huge, odd, '"just a string"', "null"):
        view = CallView("pay", raw)
        findings = c.assess(NO_POLICY, [("grounding", partial(c.grounding, [view], {}, corpus))])
        assert all(f.severity != "error" for f in findings), findings
    seen = Corpus.of([TASK, "customer ZOË ÅLANDER"])
    assert c.grounding([CallView("pay", odd)], {}, seen) == []  # the unicode note's facts are all in the task
    [huge_finding] = c.grounding([CallView("pay", huge)], {}, corpus)
    assert len(huge_finding.evidence["ungrounded"]) <= c.MAX_LEAVES


def test_invalid_calls_are_schema_findings_not_grounding_ones() -> None:
    invalid = CallView("pay", "{not json", "ERROR: arguments are not JSON")
    assert [f.check for f in c.schema([invalid])] == ["schema"]
    assert c.grounding([invalid], {}, Corpus.of([TASK])) == []


def test_final_answer_facts_must_have_been_observed() -> None:
    corpus = Corpus.of([TASK, "Transfer TX-51 confirmed: 120050 cents to ACCT-0042."])
    assert c.answer_facts("Paid 1,200.5 (120050 cents) to Acme Corp, transfer TX-51.", corpus) == []
    [finding] = c.answer_facts("Paid 1,250.00 to Acme Corp, transfer TX-52, approved by Jane Doe.", corpus)
    assert finding.evidence["unsupported"] == ["1250", "tx-52", "jane doe"]


def test_intent_names_another_catalog_tool() -> None:
    catalog = ["lookup_order", "pay", "calculator"]
    assert c.intent("Let me look it up with lookup_order.", [CallView("lookup_order", "{}")], catalog) == []
    assert c.intent("Checking the order, then I will pay.", [CallView("lookup_order", "{}")], catalog)
    assert c.intent("Thinking.", [CallView("pay", "{}")], catalog) == []  # names no tool: nothing to compare
    [finding] = c.intent("I'll use the calculator for the total.", [CallView("pay", "{}")], catalog)
    assert finding.evidence["stated"] == ["calculator"] and finding.evidence["called"] == ["pay"]
    assert c.intent("Now lookup order details.", [CallView("pay", "{}")], catalog)  # spaced name


def test_procedure_requires_an_earlier_successful_call() -> None:
    policy = parse_policy({"requires": {"pay": ["lookup_*"]}})
    [finding] = c.procedure([pay(to_account="ACCT-0042")], (), policy)
    assert finding.severity == "critical" and finding.evidence["missing"] == ["lookup_*"]
    assert c.procedure([pay(to_account="ACCT-0042")], ("lookup_order",), policy) == []


def test_repetition_exempts_polling_tools_and_try_again_results() -> None:
    policy = parse_policy({"polling": ["job_status"]})
    same = Outcome("lookup", "t:abc", "Apache Avro is a format", False)
    seen, first = c.repetition((), [same], policy)
    _seen, again = c.repetition(seen, [same], policy)
    assert first == [] and [f.check for f in again] == ["repetition"]
    poll = Outcome("job_status", "t:job", "running", False)
    assert c.repetition(c.repetition((), [poll], policy)[0], [poll], policy)[1] == []
    busy = Outcome("lookup", "t:abc", "HTTP 429 Too Many Requests", True)
    assert c.repetition(c.repetition((), [busy], policy)[0], [busy], policy)[1] == []
    other_result = Outcome("lookup", "t:abc", "Apache Avro is a compact format", False)
    assert c.repetition(seen, [other_result], policy)[1] == []


def test_a_check_that_raises_becomes_an_error_finding_and_the_rest_run() -> None:
    def broken() -> list[c.Finding]:
        raise RuntimeError("bug")

    findings = c.assess(NO_POLICY, [("grounding", broken), ("schema", lambda: c.schema([CallView("x", "", "bad")]))])
    assert [(f.check, f.severity) for f in findings] == [("grounding", "error"), ("schema", "critical")]


def test_disabled_checks_do_not_run() -> None:
    policy = parse_policy({"disabled": ["schema"]})
    assert c.assess(policy, [("schema", lambda: c.schema([CallView("x", "", "bad")]))]) == []


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{nope", "not JSON"),
        ("[1]", "expected a JSON object"),
        ({"requires": ["pay"]}, "requires must map"),
        ({"requires": {"pay": "lookup"}}, "requires.pay must be a list"),
        ({"polling": [1]}, "polling must be a list of non-empty strings"),
        ({"disabled": ["vibes"]}, "unknown check(s) vibes"),
        ({"workflow": {}}, "unknown field(s) workflow"),
        ({"constants": ["x"] * 1001}, "at most 1000"),
    ],
)
def test_a_malformed_policy_is_a_typed_error_naming_the_field(raw: object, message: str) -> None:
    with pytest.raises(EvalPolicyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_policy(raw)  # type: ignore[arg-type]


def test_a_pinned_policy_this_version_cannot_read_judges_by_no_rules() -> None:
    assert pinned_policy('{"requires": {"pay": "x"}}') == NO_POLICY


def test_the_policy_is_set_like_other_tenant_tool_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rule = '{"requires": {"pay": ["lookup_*"]}, "polling": ["job_status"]}'
    args = parser().parse_args(["tools", "policy", "acme", "--eval", rule])
    assert args.eval == orjson.loads(rule)
    stored = TenantPolicy.from_json(TenantPolicy(eval_json=rule).to_json())  # as the catalog reads it back
    assert parse_policy(stored.eval_json).requires == {"pay": ("lookup_*",)}
    with pytest.raises(SystemExit):
        parser().parse_args(["tools", "policy", "acme", "--eval", '{"requires": {"pay": "lookup"}}'])
    assert "argument --eval: eval policy: requires.pay must be a list" in capsys.readouterr().err


async def test_a_malformed_policy_is_never_journaled(tmp_path: Path) -> None:
    settings = Settings("127.0.0.1:1", "ev", tmp_path, ModelSettings(), kafka_extra={})  # no broker: refused first
    with pytest.raises(RegistryError, match="unknown check"):
        await set_policy(settings, "acme", TenantPolicy(eval_json='{"disabled": ["vibes"]}'), by="test")
