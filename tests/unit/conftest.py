"""The unit layer runs without a broker or a server: a unit test that asks for the broker (directly
or through a fixture built on it, such as `settings`) fails before it starts, saying where it
belongs, instead of quietly starting a broker and making the fast layer slow."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

BROKER_FIXTURE = "kafka_broker"


def broker_problem(nodeid: str, fixturenames: Iterable[str]) -> str | None:
    """Why a unit test may not run as written, or None."""
    if BROKER_FIXTURE not in fixturenames:
        return None
    return (
        f"{nodeid} asks for the Kafka broker (fixture {BROKER_FIXTURE!r}, maybe through `settings`), "
        "but tests/unit runs without one: move it to tests/integration (one component against a real "
        "broker or server) or tests/e2e (the whole stack), or test the pure part without the broker"
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    problem = broker_problem(item.nodeid, getattr(item, "fixturenames", ()))
    if problem is not None:
        pytest.fail(problem, pytrace=False)
