"""Workflow definitions: each registration check refuses with its own kind, and the branch
condition language parses only what it declares (hostile input is refused, bounded)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from agentstream.workflows import expressions
from agentstream.workflows.definition import EXAMPLES, parse_workflow, render_value
from agentstream.workflows.errors import WorkflowError
from agentstream.workflows.expressions import ExpressionError

EXAMPLE = EXAMPLES / "ticket_triage.json"


def _base() -> dict[str, Any]:
    return {
        "name": "w",
        "state": {"score": {"type": "number", "default": 0}, "out": {"type": "string"}},
        "start": "rate",
        "nodes": [
            {"id": "rate", "type": "model", "prompt": "rate {task}", "output": "score"},
            {"id": "route", "type": "branch"},
            {
                "id": "high",
                "type": "tool",
                "tool": "calculator",
                "arguments": {"expression": "{score}"},
                "output": "out",
            },
            {"id": "low", "type": "approval", "reason": "low {score}"},
        ],
        "edges": [
            {"from": "rate", "to": "route"},
            {"from": "route", "to": "high", "when": "score > 2"},
            {"from": "route", "to": "low"},
        ],
    }


def _refused(doc: dict[str, Any]) -> WorkflowError:
    with pytest.raises(WorkflowError) as caught:
        parse_workflow(doc)
    return caught.value


def test_the_example_definition_validates_and_pins_its_tools() -> None:
    wf = parse_workflow(EXAMPLE.read_text())
    assert len(wf.nodes) == 12
    assert wf.tools() == ("calculator", "lookup", "request_approval")
    assert parse_workflow(wf.to_json()) == wf  # what a run pins parses back to the same definition


def test_unknown_node_type() -> None:
    doc = _base()
    doc["nodes"][3]["type"] = "teleport"
    error = _refused(doc)
    assert error.kind == "unknown_node_type" and error.node == "low" and "teleport" in str(error)


def test_missing_edge_target_and_missing_default() -> None:
    doc = _base()
    doc["edges"].append({"from": "high", "to": "nowhere"})
    assert _refused(doc).kind == "missing_target"
    doc = _base()
    doc["edges"][2]["when"] = "score <= 2"  # a branch with no way out when nothing holds
    error = _refused(doc)
    assert error.kind == "missing_target" and "default" in str(error)
    doc = _base()
    doc["start"] = "ghost"
    assert _refused(doc).kind == "missing_target"


def test_unreachable_nodes() -> None:
    doc = _base()
    doc["nodes"].append({"id": "island", "type": "tool", "tool": "calculator"})
    error = _refused(doc)
    assert error.kind == "unreachable" and "island" in str(error)


def test_a_cycle_needs_a_bound_and_a_bounded_one_registers() -> None:
    doc = _base()
    doc["edges"].append({"from": "high", "to": "rate"})
    error = _refused(doc)
    assert error.kind == "unbounded_cycle" and "rate -> route -> high -> rate" in str(error)
    doc["edges"][-1]["max_iterations"] = 3
    parse_workflow(doc)


def test_bad_state_references() -> None:
    for where, value in (("prompt", "rate {nope}"), ("output", "nope")):
        doc = _base()
        doc["nodes"][0][where] = value
        error = _refused(doc)
        assert error.kind == "bad_reference" and "nope" in str(error)
    doc = _base()
    doc["edges"][1]["when"] = "secret > 2"
    assert _refused(doc).kind == "bad_reference"
    doc = _base()
    doc["edges"][1]["when"] = "score >"
    assert _refused(doc).kind == "bad_expression"


def test_a_fan_out_must_meet_at_its_join() -> None:
    doc = copy.deepcopy(_base())
    doc["nodes"] = [
        {"id": "rate", "type": "parallel", "join": "meet"},
        {"id": "a", "type": "tool", "tool": "calculator"},
        {"id": "b", "type": "tool", "tool": "calculator"},
        {"id": "meet", "type": "join"},
    ]
    doc["edges"] = [{"from": "rate", "to": "a"}, {"from": "rate", "to": "b"}, {"from": "a", "to": "meet"}]
    error = _refused(doc)  # b never reaches the join
    assert error.kind == "bad_parallel"
    doc["edges"].append({"from": "b", "to": "meet"})
    parse_workflow(doc)


def test_shape_errors_name_the_field() -> None:
    error = _refused({"name": "w", "start": "a", "nodes": [{"id": "a", "type": "model", "prompt": 3}]})
    assert error.kind == "invalid" and "nodes.0.prompt" in str(error)
    assert _refused({"name": "bad name!", "start": "a", "nodes": [{"id": "a", "type": "join"}]}).kind == "invalid"


def test_tool_arguments_render_typed_values() -> None:
    values = {"score": 4, "name": "x"}
    assert render_value({"n": "{score}", "s": "n={score} {name}", "k": [1, "{name}"]}, values) == {
        "n": 4, "s": "n=4 x", "k": [1, "x"],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("text", "values", "expected"),
    [
        ("score >= 3", {"score": 3}, True),
        ("score > 3 or label == 'urgent'", {"score": 1, "label": "urgent"}, True),
        ("not (a and b)", {"a": True, "b": False}, True),
        ("len(items) - 1 == 2", {"items": [1, 2, 3]}, True),
        ("'x' in tags and 'y' not in tags", {"tags": ["x"]}, True),
        ("-score < -2.5", {"score": 3}, True),
        ("missing == null", {}, True),
    ],
)
def test_conditions_evaluate(text: str, values: dict[str, Any], expected: bool) -> None:
    assert expressions.check(text, values) is expected


@pytest.mark.parametrize(
    "text",
    [
        "score.__class__",  # attribute access: '.' is no token of the language
        "__import__('os')",  # a call of anything but len
        "score[0]",  # indexing
        "lambda: 1",
        "a if b else c",
        "score ** 2",
        "1e999 > 2",
        "(" * 50 + "1" + ")" * 50,  # nesting past the bound
        "not " * 100 + "a",
        "a or " * 300 + "a",  # past the token bound
        "x" * 5000,  # past the length bound
        "",
    ],
)
def test_hostile_conditions_are_refused(text: str) -> None:
    with pytest.raises(ExpressionError):
        expressions.parse(text)


def test_type_errors_at_evaluation_are_expression_errors() -> None:
    with pytest.raises(ExpressionError):
        expressions.check("score < 'a'", {"score": 1})
    with pytest.raises(ExpressionError):
        expressions.check("len(score)", {"score": 1})
