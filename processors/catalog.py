"""Which processor cores exist, and how each is built: what `agentstream process <name>` runs."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable

from agentstream.process import BuildCore

# The order the engine hosts them in; each is also runnable as its own process.
CORES = ("orchestrator", "policy-gate", "cost-governor", "kv-dispatcher", "model-invoker", "tool-executor")


def engine_cores() -> tuple[str, ...]:
    """Every core a deployment runs: the KV-affinity dispatcher only with a pool of model replicas."""
    replicas = os.environ.get("AGENTSTREAM_REPLICAS", "").strip()
    return tuple(c for c in CORES if c != "kv-dispatcher" or replicas)


def builds_for(names: Iterable[str]) -> dict[str, BuildCore]:
    builds: dict[str, BuildCore] = {}
    for name in names:
        if name not in CORES:
            raise ValueError(f"no processor named {name!r} (known: {', '.join(CORES)})")
        module = importlib.import_module(f"agentstream.processors.{name.replace('-', '_')}.app")
        builds[name] = module.build
    return builds
