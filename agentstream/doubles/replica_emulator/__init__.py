"""A model *replica emulator*: an OpenAI-compatible server with a per-replica KV cache and a
calibrated timing model, standing in for a vLLM replica in routing tests and benchmarks.

Each replica keeps its own sessions' KV resident (LRU, never evicting running requests), so a
router that sends a conversation back to the replica that served its earlier turns sees cache hits
and lower TTFT, and one that scatters turns pays the prefill again.
"""

from agentstream.doubles.replica_emulator.engine import GenerationResult, ReplicaEngine, RequestTooLarge
from agentstream.doubles.replica_emulator.kvcache import CacheCounters, KvCache
from agentstream.doubles.replica_emulator.profile import DEFAULT_8B_H100, UNLIMITED_KV_TOKENS, ReplicaProfile
from agentstream.doubles.replica_emulator.runner import running_emulator
from agentstream.doubles.replica_emulator.server import ReplicaEmulator, make_app

__all__ = [
    "DEFAULT_8B_H100",
    "UNLIMITED_KV_TOKENS",
    "CacheCounters",
    "GenerationResult",
    "KvCache",
    "ReplicaEmulator",
    "ReplicaEngine",
    "ReplicaProfile",
    "RequestTooLarge",
    "make_app",
    "running_emulator",
]
