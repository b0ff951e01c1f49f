"""The processor registry: which processor cores exist, and how each is built (what `agentstream
process <name>` runs). The one list of them: the CLI's choices, the Kafka principals and their
ACLs (kafka/auth.py), the journal signing keys and a local deployment's processes derive from it.
Imports nothing of the platform at run time, so the lowest layers can read it."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentstream.process import BuildCore
    from agentstream.settings import KvSettings

# The order the engine hosts them in; each is also runnable as its own process. Each is the package
# agentstream.processors.<name with underscores>, whose `app` module has `build` (a BuildCore).
CORES = ("orchestrator", "policy-gate", "cost-governor", "kv-dispatcher", "model-invoker", "tool-executor")
# Deployed only with a pool of model replicas (AGENTSTREAM_REPLICAS) for it to route model calls to.
REPLICA_ONLY = frozenset({"kv-dispatcher"})


def app_module(name: str) -> str:
    return f"agentstream.processors.{name.replace('-', '_')}.app"


def deployed_cores(with_replicas: bool) -> tuple[str, ...]:
    """Every core a deployment runs: the KV-affinity dispatcher only with a pool of model replicas."""
    return tuple(c for c in CORES if c not in REPLICA_ONLY or with_replicas)


def engine_cores(kv: KvSettings) -> tuple[str, ...]:
    return deployed_cores(with_replicas=bool(kv.replicas))


def builds_for(names: Iterable[str]) -> dict[str, BuildCore]:
    builds: dict[str, BuildCore] = {}
    for name in names:
        if name not in CORES:
            raise ValueError(f"no processor named {name!r} (known: {', '.join(CORES)})")
        module = importlib.import_module(app_module(name))
        builds[name] = module.build
    return builds
