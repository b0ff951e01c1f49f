"""The unit layer's guard (tests/unit/conftest.py): a test that needs the broker is refused with
the layer it belongs in."""

from __future__ import annotations

import pytest

from tests.unit.conftest import broker_problem


def test_a_test_that_asks_for_the_broker_is_refused_with_where_it_belongs() -> None:
    problem = broker_problem("tests/unit/test_x.py::test_y", ["tmp_path", "settings", "kafka_broker"])
    assert problem is not None
    assert "test_y asks for the Kafka broker" in problem and "tests/integration" in problem


def test_a_test_without_the_broker_runs(request: pytest.FixtureRequest) -> None:
    assert broker_problem(request.node.nodeid, request.fixturenames) is None
