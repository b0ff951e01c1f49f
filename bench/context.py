"""Context management off and on, on the same long-horizon scenario set, through the whole stack.

    .venv/bin/python bench/context.py --runs 30 [--steps 30]
    .venv/bin/python bench/context.py --runs 2 --steps 30          # a quick check, a few minutes

Each run reads `steps - 1` pages with the `fetch_page` tool (agentstream/doubles/pages_server.py,
20-200 KB each, a real MCP stdio process), then answers questions whose facts sit in its first
pages. The model is the scripted model's context-faithful mode: it answers only from what its
prompt holds, and reads a cleared result back through its handle (`read_result`), so a compaction
that drops a needed fact fails the run rather than passing by luck.

- off: context management off and blob offload off (AGENTSTREAM_BLOB_OFFLOAD_BYTES=0): every byte
  inline in the journal, the platform as it was before issue 17. A result is cut at 64,000
  characters (each page's fact sits before 60,000), and 29 of them make a request of about 1.8 MB,
  past the default journal record budget of 1,000,000 bytes (the run would fail
  `context_too_large`), so this mode raises AGENTSTREAM_JOURNAL_RECORD_BUDGET_BYTES to 4 MiB, the
  most a run's state record can hold (agentstream/journal_limits.py).
- on: each run asks for `{"mode": "on"}` (every other context setting at its default; `--on-context`
  sets others, e.g. a low `trigger_tokens` to make compactions summarize); offload on.

Each mode gets its own local broker. Measured per mode (bench/context_measure.py): success_rate,
input_tokens_per_run, peak_prompt_tokens, journal_bytes_per_run (key + value of the run's journal
records, read back raw), prefix_cache_hit_rate (each run's requests through the replica emulator's
KV cache model). The last line is one JSON object: {"off": {...}, "on": {...}, "requirements": {...}}.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from agentstream.client.journal import RunRequest
from agentstream.client.scan import read_journal
from agentstream.config import Settings
from agentstream.doubles import pages_server
from agentstream.doubles.pages_server import expected_facts
from agentstream.events import SETTLED_TYPES
from agentstream.kafka.consumer import consumer_config, watermarks
from agentstream.processors.tool_executor.discovery import discover
from agentstream.registry.admin import register_tool
from agentstream.stack import LAYOUT_ENV, Deployment
from agentstream.topics import JOURNAL, load_topics
from bench.common import bench_settings
from bench.context_measure import ModeTally, requirements
from bench.scenarios import write_scenarios
from bench.watch import TerminalWatcher

SCENARIO = "faithful_pages"
# The most a run's state record can hold (journal_limits.py): a conversation of 29 cut pages fits.
OFF_BUDGET_BYTES = 4 * 1024 * 1024
MODES: dict[str, dict[str, str]] = {
    "off": {"AGENTSTREAM_BLOB_OFFLOAD_BYTES": "0", "AGENTSTREAM_JOURNAL_RECORD_BUDGET_BYTES": str(OFF_BUDGET_BYTES)},
    "on": {},
}


@dataclasses.dataclass(frozen=True)
class Plan:
    """One run's task: its pages and the facts it must answer (from its early pages)."""

    index: int
    pages: list[str]
    questions: dict[str, str]

    @property
    def task(self) -> str:
        lines = [f"[scenario:{SCENARIO}] run {self.index}: read every page, then answer.",
                 "PAGES: " + ",".join(self.pages), *(f"QUESTION: {k}" for k in self.questions)]  # fmt: skip
        return "\n".join(lines)


def plans(runs: int, steps: int, seed: int) -> list[Plan]:
    """`steps - 1` pages a run (a model call each) and the answer: `steps` model calls with
    management off; with it on, also a read-back per cleared question and the summarizations.
    The questions are the facts of each run's 1st and 3rd pages: two, so that both read-backs stay
    among the turns a compaction keeps (`keep_turns` 2) when the answer is given."""
    out = []
    for i in range(runs):
        pages = [f"p{i * 1000 + j}" for j in range(1, steps)]
        out.append(Plan(i, pages, expected_facts([pages[0], pages[min(2, len(pages) - 1)]], seed)))
    return out


def run_request(plan: Plan, context: dict[str, Any] | None, max_steps: int) -> RunRequest:
    return RunRequest(task=plan.task, tools=["fetch_page"], max_steps=max_steps, context=context)


def journal_bytes(settings: Settings) -> dict[str, int]:
    """Key + value bytes of every journal record, by run (a record's key starts with its run id)."""
    topic = load_topics(settings.topic_prefix)[JOURNAL].name
    consumer = Consumer(consumer_config(settings.bootstrap_servers, settings.kafka_extra, {"group.id": "bench-bytes"}))
    sizes: dict[str, int] = defaultdict(int)
    try:
        md = consumer.list_topics(topic, timeout=10)
        tps = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.topics[topic].partitions]
        ends = {tp.partition: watermarks(consumer, tp)[1] for tp in tps}
        done = {p for p, end in ends.items() if end == 0}
        consumer.assign(tps)
        while len(done) < len(ends):
            for msg in consumer.consume(2000, 0.5):
                if msg.error() is not None:
                    continue
                key, value = msg.key() or b"", msg.value() or b""
                sizes[key.decode().split("/", 1)[0]] += len(key) + len(value)
                if (msg.offset() or 0) + 1 >= ends[msg.partition() or 0]:
                    done.add(msg.partition() or 0)
    finally:
        consumer.close()
    return dict(sizes)


def dump(directory: Path, runs: dict[str, list[Any]]) -> None:
    """Each run's events, one JSON line each, long texts cut: to see why a run failed."""
    directory.mkdir(parents=True, exist_ok=True)
    for run_id, events in runs.items():
        with (directory / f"{run_id}.jsonl").open("w") as fh:
            for event in events:
                fields = {k: (v[:600] + f"...[{len(v)}]" if isinstance(v, str) and len(v) > 600 else v)
                          for k, v in dataclasses.asdict(event).items()}  # fmt: skip
                fh.write(json.dumps({"type": event.type_name, **fields}, default=str) + "\n")


async def run_mode(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    async with bench_settings(f"context{mode}") as (settings, _):
        scenarios = settings.home / "scenarios"
        write_scenarios(scenarios, [{"name": SCENARIO, "turns": [], "faithful": True}])
        server = {"kind": "stdio", "server": "pages", "command": sys.executable,
                  "args": [str(Path(pages_server.__file__).resolve()), "--seed", str(args.seed)]}  # fmt: skip
        for draft in await discover(server):
            await register_tool(settings, dataclasses.replace(draft, tier="read_only"))
        env = {LAYOUT_ENV: "engine", **MODES[mode]}
        todo = plans(args.runs, args.steps, args.seed)
        watcher = TerminalWatcher(settings, SETTLED_TYPES)  # a halted run is never resumed here
        # The faithful scenario is the default too: a summarization request has no scenario marker.
        async with Deployment(
            settings, [scenarios], default_scenario=SCENARIO, extra_env=env, wait_tools=("calculator",)
        ) as d:
            began = time.monotonic()
            context = args.on_context if mode == "on" else None
            ids = {await d.client.request_run(run_request(p, context, args.steps + 12)): p for p in todo}
            missing = await watcher.wait(set(ids), args.timeout)
            wall = time.monotonic() - began
        watcher.close()
        journal = await read_journal(settings)
        sizes = await asyncio.to_thread(journal_bytes, settings)
    tally = ModeTally()
    for run_id, plan in ids.items():
        tally.add_run([e.event for e in journal.get(run_id, [])], plan.questions, sizes.get(run_id, 0))
    if args.dump is not None:
        dump(args.dump / mode, {r: [e.event for e in journal.get(r, [])] for r in ids})
    result = tally.summary()
    # Where each run that never ended stopped: its last events.
    result["stuck"] = {r: [e.event.type_name for e in journal.get(r, [])[-4:]] for r in sorted(missing)[:5]}
    result.update({"lost": len(missing), "wall_s": round(wall, 1), "context": context or {"mode": "off"},
                   "env": MODES[mode]})  # fmt: skip
    print(f"{mode}: {json.dumps(result)}", file=sys.stderr)
    return result


async def main(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in args.modes.split(","):
        out[mode] = await run_mode(mode, args)
    if "off" in out and "on" in out:
        out["requirements"] = requirements(out["off"], out["on"])
    out["runs"], out["steps"] = args.runs, args.steps
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--steps", type=int, default=30, help="model calls a run makes with management off (>= 4)")
    parser.add_argument("--seed", type=int, default=0, help="the pages' facts")
    parser.add_argument("--modes", default="off,on", help="comma-separated, in order: off, on")
    parser.add_argument(
        "--on-context", type=json.loads, default={"mode": "on"}, metavar="JSON",
        help='the "on" runs\' context settings (default: {"mode": "on"}, every other setting at its default)',
    )  # fmt: skip
    parser.add_argument("--dump", type=Path, default=None, help="write each run's events (texts cut) under DIR/<mode>/")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for a mode's runs")
    args = parser.parse_args(argv)
    if args.steps < 4 or args.runs < 1 or not set(args.modes.split(",")) <= set(MODES):
        parser.error("--steps must be >= 4, --runs >= 1, --modes a list of off and on")
    return args


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse_args()))))
