"""Sandboxed execution of stdio tool processes on Linux: resource limits, a scrubbed environment,
a private network namespace whose only way out is an allowlisting egress proxy, a mount namespace
that hides the platform's files, and a pid namespace that hides every other process."""

from agentstream.sandbox.egress import EgressProxy
from agentstream.sandbox.launcher import (
    SandboxUnavailable,
    make_sandbox_dir,
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
    "make_sandbox_dir",
    "namespaces_available",
    "require_sandbox",
    "sandboxed_argv",
    "scrubbed_environment",
]
