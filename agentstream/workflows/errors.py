"""The typed refusal of a workflow definition: which rule it breaks, and where."""

from __future__ import annotations

from typing import Literal

ErrorKind = Literal[
    "invalid",  # the document's shape (a missing field, a wrong type, a bad name)
    "unknown_node_type",
    "missing_target",  # an edge (or start, join, on_denied) names no node, or a node lacks an edge it needs
    "unreachable",
    "unbounded_cycle",
    "bad_reference",  # a template, expression or output names a state field that is not declared
    "bad_expression",
    "bad_parallel",  # a fan-out whose branches do not meet at its join
]


class WorkflowError(ValueError):
    def __init__(self, kind: ErrorKind, message: str, node: str = "") -> None:
        super().__init__(f"{message}" if not node else f"node {node!r}: {message}")
        self.kind: ErrorKind = kind
        self.node = node
