"""The processor shell's commit order (agentstream/kafka/runtime.py), one crash at a time.

The shell's own code (ProcessorRuntime: fetch, apply, hand-off, produce, store commit, changelog
flush, side effects, group offsets) runs over the in-memory twin of the broker (tests/kafka_twin.py)
and real RocksDB stores. A process hosting two cores is killed at each step of the order, its
stores kept or lost, and a fresh process takes over. Whatever the step, the journal then holds
every output exactly as a run without a crash does (no event lost, none written twice), the
stores hold the same state, every record is applied, and a side effect whose result was
journaled is never performed again; only one in flight when the process died is.
"""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agentstream.codec import AvroCodec
from agentstream.events import (
    Event,
    LlmCallCompleted,
    LlmCallRequested,
    ProcessorStatus,
    RunCompleted,
    RunEvent,
    RunRequested,
)
from agentstream.kafka.core import Outcome, WorkItem
from agentstream.kafka.hosting import HostedCore, store_path
from agentstream.kafka.journal import RecordFactory
from agentstream.kafka.runtime import ProcessorRuntime
from agentstream.kafka.runtime_config import RuntimeConfig
from agentstream.kafka.runtime_io import publish_status_forever
from agentstream.kafka.state import PartitionStore
from tests.kafka_twin import Crash, CrashPlan, TwinBroker, TwinConsumer, crashing_stores

JOURNAL, PARTITIONS = "twin.journal", 2
CHANGELOGS = {"planner": "twin.changelog.planner", "finisher": "twin.changelog.finisher"}
RUNS = [f"run{i}" for i in range(8)]
CODEC = AvroCodec()


class Planner:
    """Asks one model call per run and notes its answer. Evolves only while recovering; `resume`
    acts on what the state says is still pending, as the real cores do."""

    name = "planner"

    def __init__(self, calls: Counter[str], plan: CrashPlan) -> None:
        self.calls = calls
        self.plan = plan

    def accepts(self, type_name: str) -> bool:
        return type_name in ("RunRequested", "LlmCallRequested", "LlmCallCompleted")

    def apply(self, store: PartitionStore, event: Event, *, live: bool) -> Outcome:
        assert isinstance(event, RunEvent)
        key, state = f"run/{event.run_id}", store.get(f"run/{event.run_id}")
        if isinstance(event, RunRequested):
            if state is not None:
                return Outcome()
            store.put(key, {"asked": False, "answered": False})
            return Outcome(emit=[self._ask(event.run_id)]) if live else Outcome()
        if state is None or state["asked" if isinstance(event, LlmCallRequested) else "answered"]:
            return Outcome()  # a duplicate: already applied
        if isinstance(event, LlmCallRequested):
            store.put(key, {**state, "asked": True})
            return Outcome(work=[self._call(event.run_id)]) if live else Outcome()
        store.put(key, {**state, "answered": True})
        return Outcome()

    def still_wanted(self, store: PartitionStore, key: str) -> bool:
        return True

    def resume(self, store: PartitionStore) -> Outcome:
        out = Outcome()
        for key in store.keys_with_prefix("run/"):
            run, state = key.removeprefix("run/"), store.get(key) or {}
            if not state["asked"]:
                out.emit.append(self._ask(run))
            elif not state["answered"]:
                out.work.append(self._call(run))
        return out

    def _ask(self, run: str) -> LlmCallRequested:
        return LlmCallRequested(event_id=f"{run}/ask", run_id=run, tenant_id="t", step=1, call_id=f"{run}/call", model="m",
                                messages_json="[]", tools_json="[]", max_tokens=8)  # fmt: skip

    def _call(self, run: str) -> WorkItem:
        async def perform() -> list[RunEvent]:
            self.calls[run] += 1  # the effect happens; a crash now loses only its answer
            self.plan.check("work:running")
            return [LlmCallCompleted(event_id=f"{run}/answer", run_id=run, tenant_id="t", step=1, call_id=f"{run}/call",
                                     provider="twin", model="m", text="ok", tool_calls_json="[]",
                                     finish_reason="stop", input_tokens=1, output_tokens=1,
                                     cached_input_tokens=0, latency_ms=0.0, attempts=1)]  # fmt: skip

        return WorkItem(f"{run}/call", perform)


class Finisher:
    """A second core in the same process: ends a run once its model call is answered."""

    name = "finisher"

    def accepts(self, type_name: str) -> bool:
        return type_name in ("LlmCallCompleted", "RunCompleted")

    def apply(self, store: PartitionStore, event: Event, *, live: bool) -> Outcome:
        assert isinstance(event, RunEvent)
        if isinstance(event, RunCompleted):
            store.put(f"done/{event.run_id}", True)
            return Outcome()
        if store.get(f"answer/{event.run_id}") is not None:
            return Outcome()
        store.put(f"answer/{event.run_id}", True)
        return Outcome(emit=[self._done(event.run_id)]) if live else Outcome()

    def still_wanted(self, store: PartitionStore, key: str) -> bool:
        return True

    def resume(self, store: PartitionStore) -> Outcome:
        runs = [k.removeprefix("answer/") for k in store.keys_with_prefix("answer/")]
        return Outcome(emit=[self._done(run) for run in runs if store.get(f"done/{run}") is None])

    def _done(self, run: str) -> RunCompleted:
        return RunCompleted(
            event_id=f"{run}/done", run_id=run, tenant_id="t", steps=1, final_answer="ok", reason="answered"
        )


@dataclass
class World:
    """The twin broker, the state directory and the side effects performed, across lives."""

    root: Path
    broker: TwinBroker = field(
        default_factory=lambda: TwinBroker(
            {JOURNAL: PARTITIONS, "twin.dlq": 1, **dict.fromkeys(CHANGELOGS.values(), PARTITIONS)}
        )
    )
    calls: Counter[str] = field(default_factory=Counter)
    began: dict[int, int] = field(default_factory=dict)  # per partition: where the last life's reading began
    changelog_interval_s: float = 0.0

    def __post_init__(self) -> None:
        records = RecordFactory(CODEC, JOURNAL, PARTITIONS)
        for run in RUNS:
            request = RunRequested(event_id=f"{run}/req", run_id=run, tenant_id="t", task="t", model="m", tools=[], max_steps=1,
                                   idempotency_key=run)  # fmt: skip
            self.broker.append(records.journal(request))

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    def runtime(self, plan: CrashPlan) -> ProcessorRuntime:
        """The shell of one process hosting both cores, over the twin and this world's state."""
        self.broker.plan = plan
        records = RecordFactory(CODEC, JOURNAL, PARTITIONS)
        config = RuntimeConfig(bootstrap="twin", input_topic=JOURNAL, deadletter_topic="twin.dlq",
                               status_topic="twin.status", state_dir=self.state_dir, instance="0", batch_size=3,
                               changelogs=CHANGELOGS, changelog_interval_s=self.changelog_interval_s)  # fmt: skip
        cores = [HostedCore(Planner(self.calls, plan), records), HostedCore(Finisher(), records)]
        return ProcessorRuntime(cores, self.broker.producer(), config, "shell", consumers=self.broker.consumer,
                                open_store=crashing_stores(plan))  # fmt: skip

    async def live(self, plan: CrashPlan) -> bool:
        """One process's life: until nothing is left to do (False) or the planned crash (True)."""
        runtime = self.runtime(plan)
        try:
            await self.drive(runtime, plan)
        except Crash:
            # SIGKILL: what reached the twin stays; staged state and running tasks are gone.
            for task in [*runtime._running.values(), runtime._flushing]:
                if task is not None:
                    task.cancel()
            for part in runtime.partitions().values():
                for slot in part.slots.values():  # not part.close(): that writes what is due, a kill does not
                    slot.store.discard_staged()
                    slot.store.close()
            return True
        runtime._close_consumer()
        return False

    async def drive(self, runtime: ProcessorRuntime, plan: CrashPlan) -> None:
        """Runs `runtime` until nothing is left to do, or raises the planned Crash."""
        # What `run` sets up before its loop; the steps below are its loop and the fetch thread's.
        runtime._loop, runtime._wake = asyncio.get_running_loop(), asyncio.Event()
        consumer = runtime.fetcher.consumer
        assert isinstance(consumer, TwinConsumer)
        consumer.rebalance(list(range(PARTITIONS)))
        self.began = runtime.applied_offsets()
        quiet = 0
        while quiet < 3:
            fetched = runtime.fetcher._fetch()
            if fetched:
                runtime._deliver(fetched)
            await runtime._step()
            runtime.fetcher._commit_queued()
            for _ in range(5):  # side effects run, and hand their results to the next step
                await asyncio.sleep(0)
            if runtime._flushing is not None:
                await asyncio.wait({runtime._flushing})
            if plan.fired:  # in a side effect or the changelog flush: tasks of the same process
                raise Crash(plan.point)
            quiet = 0 if fetched or runtime._inbox or runtime._running else quiet + 1

    def journal(self) -> list[tuple[str, bytes]]:
        return [((m.key() or b"").decode(), m.value() or b"") for m in self.broker.records(JOURNAL)]

    def stores(self) -> dict[str, dict[bytes, bytes]]:
        """Each core's committed state over all partitions, and checks each reflects its partition
        up to the journal's end."""
        out: dict[str, dict[bytes, bytes]] = {}
        for core in CHANGELOGS:
            for p in range(PARTITIONS):
                store = PartitionStore(store_path(self.state_dir, core, "0", p))
                try:
                    assert store.offset() == len(self.broker.log(JOURNAL, p)), f"{core} p{p} not at the end"
                    out.setdefault(core, {}).update(store.committed())
                finally:
                    store.close()
        return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> World:
    world = World(tmp_path_factory.mktemp("reference"))
    assert asyncio.run(world.live(CrashPlan())) is False
    return world


# (point, at): every step of the order, at its first occurrence and at a later one.
CRASHES = [
    ("journal:before", 1), ("journal:before", 3), ("journal:torn", 1), ("journal:torn", 4),
    ("journal:unacked", 1), ("journal:unacked", 3), ("store:planner", 1), ("store:planner", 4),
    ("store:finisher", 2), ("store:finisher", 4), ("changelog:torn", 1), ("changelog:torn", 3),
    ("changelog:unacked", 2), ("work:running", 1), ("work:running", 5), ("group:committed", 1),
]  # fmt: skip


@pytest.mark.parametrize("lost", [False, True], ids=["stores-kept", "stores-lost"])
@pytest.mark.parametrize(("point", "at"), CRASHES, ids=[f"{p}@{n}" for p, n in CRASHES])
async def test_a_crash_at_any_step_replays_to_the_same_journal_and_state(
    point: str, at: int, lost: bool, reference: World, tmp_path: Path
) -> None:
    world = World(tmp_path)
    plan = CrashPlan(point, at)
    assert await world.live(plan) is True, f"the crash point {point} was not reached {at} times"
    answered = {key.removesuffix("/answer") for key, _ in world.journal() if key.endswith("/answer")}
    if lost:  # the disk is gone too: the stores come back from their changelogs
        shutil.rmtree(world.state_dir)
    assert await world.live(CrashPlan()) is False

    journal = world.journal()
    copies = Counter(key for key, _ in journal)
    assert sorted(copies) == sorted(key for key, _ in reference.journal()), "an output is missing or extra"
    assert [key for key, n in copies.items() if n > 1] == [], "an event was journaled twice"
    assert world.stores() == reference.stores()
    # A side effect whose result reached the journal is never performed again; one that was in
    # flight when the process died is, once (its result keeps its event id: one copy journaled).
    again = {run for run, n in world.calls.items() if n > 1}
    assert again.isdisjoint(answered) and max(world.calls.values()) <= 2
    assert set(world.calls) == set(RUNS)
    if point == "work:running":
        assert again, "the call killed while running was not performed again"


async def test_a_journal_of_duplicates_is_applied_once(tmp_path: Path) -> None:
    """Duplicates that did reach the journal (a client's retry, an older writer's copy) are
    recognised by id: the same outputs, the same state, nothing emitted twice."""
    world = World(tmp_path)
    records = RecordFactory(CODEC, JOURNAL, PARTITIONS)
    for run in RUNS[:3]:
        world.broker.append(records.journal(RunRequested(event_id=f"{run}/req", run_id=run, tenant_id="t", task="t", model="m",
                                                         tools=[], max_steps=1, idempotency_key=run)))  # fmt: skip
    assert await world.live(CrashPlan()) is False
    outputs = Counter(key for key, _ in world.journal() if not key.endswith("/req"))
    assert set(outputs.values()) == {1} and len(outputs) == 3 * len(RUNS)
    assert sum(world.calls.values()) == len(RUNS)


async def test_a_lost_store_comes_back_from_its_changelog_not_from_the_journals_beginning(tmp_path: Path) -> None:
    world = World(tmp_path)
    assert await world.live(CrashPlan()) is False
    ends = {p: len(world.broker.log(JOURNAL, p)) for p in range(PARTITIONS)}
    assert world.broker.group_offsets == {(JOURNAL, p): end for p, end in ends.items()}
    shutil.rmtree(world.state_dir)
    assert await world.live(CrashPlan()) is False
    # The restored state reflects the last changelog marker, and the journal is replayed from there
    # (markers of batches that changed nothing are spaced out: changelog.IDLE_MARKER_EVERY), not
    # from the group's offsets, which only show lag.
    assert all(0 < world.began[p] <= ends[p] for p in ends), (world.began, ends)


async def test_the_status_of_every_hosted_core_goes_out_through_the_same_producer(tmp_path: Path) -> None:
    world = World(tmp_path)
    runtime = world.runtime(CrashPlan())
    consumer = runtime.fetcher.consumer
    assert isinstance(consumer, TwinConsumer)
    consumer.rebalance(list(range(PARTITIONS)))
    stop = asyncio.Event()
    publishing = asyncio.create_task(publish_status_forever(runtime, "twin.status", 0.01, stop))
    for _ in range(500):  # a few intervals; bounded, so a status never written fails below
        if world.broker.records("twin.status"):
            break
        await asyncio.sleep(0.01)
    stop.set()
    await publishing
    runtime._close_consumer()
    statuses = [CODEC.decode(m.value()) for m in world.broker.records("twin.status")]
    assert {(s.processor, s.lag) for s in statuses if isinstance(s, ProcessorStatus)} >= {
        ("planner", len(RUNS)),
        ("finisher", len(RUNS)),
    }  # nothing applied yet: every request is lag
