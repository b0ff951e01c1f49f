"""Sandboxed execution of stdio tool processes on Linux: resource limits, a scrubbed environment,
and a private network namespace whose only way out is an allowlisting egress proxy."""

from agentstream.sandbox.egress import EgressProxy
from agentstream.sandbox.launcher import (
    SandboxUnavailable,
    namespaces_available,
    require_sandbox,
    sandboxed_argv,
    scrubbed_environment,
)
from agentstream.sandbox.policy import SandboxPolicy, egress_allowed

__all__ = [
    "EgressProxy",
    "SandboxPolicy",
    "SandboxUnavailable",
    "egress_allowed",
    "namespaces_available",
    "require_sandbox",
    "sandboxed_argv",
    "scrubbed_environment",
]
