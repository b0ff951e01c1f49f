"""The processor shell's metrics (agentstream/kafka/runtime.py): what each hosted core processed
and what was dead-lettered, by event type; consumer lag, side effects running, write retries.

The loop only bumps plain dict entries (a tuple key and an add: tens of nanoseconds per event);
prometheus_client turns them into samples when scraped (a custom collector), on the loop's thread
since the listener runs in the same event loop.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from agentstream.events import EVENT_TYPES
from agentstream.kafka.journal import TYPE_HEADER, Record
from agentstream.metrics.endpoint import ReadWhenScraped, process_registry
from agentstream.metrics.runs import RunMetrics
from agentstream.settings import MetricsSettings, once

if TYPE_CHECKING:
    from agentstream.kafka.runtime import ProcessorRuntime, _Pending

_ORIGINAL_TYPE = f"original-{TYPE_HEADER}"


class ShellMetrics(ReadWhenScraped):
    def __init__(self, runtime: ProcessorRuntime) -> None:
        self.runtime = runtime
        # (core, event type) -> count; the loop's own counters, read when scraped
        self.processed: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.emitted: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.dead_lettered: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.registry = process_registry()
        self.runs = RunMetrics(self.registry, once(MetricsSettings).label_values)
        self.registry.register(self)

    def journaled(self, written: Iterable[_Pending], dead: Iterable[Record]) -> None:
        """After the broker acknowledged a batch's writes: what each core emitted, and what was
        dead-lettered (each record names the processor that refused it and the event's type)."""
        emitted, observe = self.emitted, self.runs.observe
        for item in written:
            event = item.event
            emitted[item.writer.name, event.type_name] += 1
            observe(event)
        for record in dead:
            headers = dict(record.headers or ())
            processor = headers.get("processor", b"").decode(errors="replace")
            type_name = headers.get(_ORIGINAL_TYPE, b"").decode(errors="replace")
            # A record's type header is the writer's word: only the platform's own names become labels.
            self.dead_lettered[processor, type_name if type_name in EVENT_TYPES else "unknown"] += 1

    def collect(self) -> Iterator[Metric]:
        runtime = self.runtime
        process = runtime.name
        yield _counter("agentstream_events_processed", "Journal events applied by each hosted core, by type",
                       self.processed)  # fmt: skip
        yield _counter("agentstream_events_emitted", "Events each hosted core wrote to the journal, by type",
                       self.emitted)  # fmt: skip
        yield _counter("agentstream_events_dead_lettered", "Events dead-lettered, by refusing processor and type",
                       self.dead_lettered)  # fmt: skip
        lag = GaugeMetricFamily("agentstream_consumer_lag_records",
                                "Journal records of the assigned partitions not yet applied", labels=["process"])  # fmt: skip
        lag.add_metric([process], runtime.counters.lag)
        yield lag
        running = GaugeMetricFamily("agentstream_side_effects_running", "Model and tool calls this process runs now",
                                    labels=["process"])  # fmt: skip
        running.add_metric([process], len(runtime._running))
        yield running
        c = runtime.counters
        for name, help_text, value in (
            ("agentstream_side_effect_failures", "Side effects that raised (a bug: they are retried)", c.work_failed),
            ("agentstream_journal_write_retries", "Rounds of journal writes retried until acknowledged",
             runtime.writer.retries),
            ("agentstream_batches", "Input batches the loop applied", c.batches),
        ):  # fmt: skip
            family = CounterMetricFamily(name, help_text, labels=["process"])
            family.add_metric([process], value)
            yield family


def _counter(name: str, help_text: str, counts: dict[tuple[str, str], int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, help_text, labels=["processor", "event_type"])
    for (core, type_name), value in list(counts.items()):
        family.add_metric([core, type_name], value)
    return family
