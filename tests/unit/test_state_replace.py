"""The run state's fast replace gives what dataclasses.replace gives, and refuses what it refuses."""

from __future__ import annotations

import dataclasses

import pytest

from agentstream.processors.orchestrator.state import PlannedCall, RunState, replace


def test_it_equals_dataclasses_replace_and_leaves_the_original_alone() -> None:
    state = RunState("r", "t", "running", "task", "m", ("calculator",), 10, labels={"a": "b"})
    changed = replace(state, step=3, llm_pending="call", messages=())
    assert changed == dataclasses.replace(state, step=3, llm_pending="call", messages=())
    assert state.step == 0 and state.llm_pending is None and type(changed) is RunState
    planned = PlannedCall("c", "tc", "calculator", "{}")
    assert replace(planned, requested=True) == dataclasses.replace(planned, requested=True)


def test_an_unknown_field_is_a_type_error() -> None:
    state = RunState("r", "t", "running", "task", "m", (), 10)
    with pytest.raises(TypeError, match="no field"):
        replace(state, stepp=3)
