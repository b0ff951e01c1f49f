"""How a processor runtime is wired: its topics, state directory and pacing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class RuntimeConfig:
    bootstrap: str
    input_topic: str
    deadletter_topic: str
    status_topic: str
    state_dir: Path
    instance: str
    kafka_extra: dict[str, str] = field(default_factory=dict)
    batch_size: int = 1000
    max_concurrent_work: int = 1000
    status_interval_s: float = 2.0
    tick_interval_s: float = 0.5
    drain_grace_s: float = 10.0
    # core name -> its changelog topic (agentstream/kafka/changelog.py); a core not named keeps none
    changelogs: dict[str, str] = field(default_factory=dict)
    # How often the coalesced state changes go to the changelogs (a lost store replays at most this
    # much journal). 3 s, not 1 s: most short-lived keys are never written; -14% CPU per step.
    changelog_interval_s: float = 3.0
