"""Kills aimed at the topologies' own phases, for bench/chaos.py's topology mix.

The chaos killer's SIGKILLs come early (a few tens of seconds of random kills) while a subagent
tree, a graph or a code-mode program reaches its interesting phase later. So with --topologies a
second killer follows the journal and, each time one of these phases is under way somewhere,
SIGKILLs a processor (the orchestrator, which folds all of them, every other time) and restarts
it at once:

  parent_waiting     a parent (ReAct or a graph's subagent node) with a spawn call not yet answered
  child_running      a child run started and not yet ended
  code_mid_program   a code-mode run between its program's first round and its next model call
  graph_running      a graph run started and not yet ended
"""

from __future__ import annotations

import asyncio
import random
import signal
import threading
import time
from dataclasses import dataclass, field

from confluent_kafka import Message

from agentstream.codec import AvroCodec, DecodeError
from agentstream.codemode.interface import RUN_CODE_TOOL as RUN_CODE
from agentstream.config import Settings
from agentstream.events import (
    TERMINAL_TYPES,
    LlmCallRequested,
    RunEvent,
    RunRequested,
    RunStarted,
    ToolCallCompleted,
    ToolCallRequested,
)
from agentstream.stack import ProcessorProcesses
from agentstream.subagents import SPAWN_AGENT
from bench.watch import TerminalWatcher

PHASES = ("parent_waiting", "child_running", "code_mid_program", "graph_running")
ORCHESTRATOR = "orchestrator-0"


@dataclass
class _Run:
    child: bool = False
    graph: bool = False
    started: bool = False
    ended: bool = False
    spawns: set[str] = field(default_factory=set)  # spawn calls not yet answered
    code_step: int = -1  # the step of the latest run_code round
    model_step: int = 0  # the step of the latest model call


@dataclass
class PhaseBook:
    """Per run, what the phases need, from its journal events."""

    runs: dict[str, _Run] = field(default_factory=dict)

    def apply(self, event: RunEvent) -> None:
        run = self.runs.setdefault(event.run_id, _Run())
        match event:
            case RunRequested():
                run.child = run.child or bool(event.parent_run_id)
            case RunStarted():
                run.started, run.graph = True, bool(event.workflow_json)
            case LlmCallRequested():
                run.model_step = max(run.model_step, event.step)
            case ToolCallRequested() if event.tool == SPAWN_AGENT:
                run.spawns.add(event.call_id)
            case ToolCallRequested() if event.tool == RUN_CODE:
                run.code_step = max(run.code_step, event.step)
            case ToolCallCompleted() if event.tool == SPAWN_AGENT:
                run.spawns.discard(event.call_id)
        if event.type_name in TERMINAL_TYPES:
            run.ended = True

    def active(self, phase: str) -> bool:
        live = [r for r in self.runs.values() if r.started and not r.ended]
        if phase == "parent_waiting":
            return any(r.spawns for r in live)
        if phase == "child_running":
            return any(r.child for r in live)
        if phase == "code_mid_program":
            return any(r.code_step >= r.model_step for r in live)
        return any(r.graph for r in live)


class PhaseWatcher(TerminalWatcher):
    """Tails the journal, decoded, into a PhaseBook."""

    def __init__(self, settings: Settings) -> None:
        self.book = PhaseBook()
        self._codec = AvroCodec()
        self._lock = threading.Lock()
        super().__init__(settings)  # starts the tailing thread: what it uses is set first

    def on_message(self, msg: Message) -> None:
        try:
            event = self._codec.decode(msg.value())
        except DecodeError:
            return
        if isinstance(event, RunEvent):
            with self._lock:
                self.book.apply(event)

    def active(self, phase: str) -> bool:
        with self._lock:
            return self.book.active(phase)


async def phase_killer(
    watcher: PhaseWatcher, procs: ProcessorProcesses, per_phase: int, seed: int, stop: asyncio.Event, log: list[str]
) -> dict[str, int]:
    """Up to `per_phase` SIGKILLs in each phase, each while that phase is under way; returns them."""
    rng = random.Random(seed)
    done = dict.fromkeys(PHASES, 0)
    while not stop.is_set() and min(done.values()) < per_phase:
        phase = next((p for p in PHASES if done[p] < per_phase and watcher.active(p)), None)
        if phase is None:
            await asyncio.sleep(0.1)
            continue
        others = sorted(k for k in procs.procs if k != ORCHESTRATOR)
        key = ORCHESTRATOR if done[phase] % 2 == 0 and ORCHESTRATOR in procs.procs else rng.choice(others)
        # Killed and started again in one go: the chaos killer, which restarts what it finds
        # exited, never sees it down (nor counts it as a crash of its own).
        procs.kill(key, signal.SIGKILL)
        procs.restart(key)
        done[phase] += 1
        log.append(f"{time.monotonic():.2f} SIGKILL {key} (phase {phase}, {done[phase]}/{per_phase})")
        await asyncio.sleep(rng.uniform(1.0, 3.0))
    return done
