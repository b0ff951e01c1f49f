"""The monitor process: tails the journal, keeps the rolling windows, and acts on alerts.

Its state is the windows, rebuilt at every start by reading the journal from the longest rule's
window back (partitions sought by the broker's time index): nothing to persist, and the same
journal gives the same alerts. Rules come from the control topic; alerts go back to it as
`AlertChanged` records (the latest state of each), each with what was done about it: nothing
more, a tool disabled or a tenant halted (kill switches), or a canary rollout rolled back
(never undone automatically: a person looks first), and an optional webhook POST. The same tail drives the judge (agentstream.judge):
sampled runs that end are graded. It runs as an operator tool, with the operator's credentials, as
`agentstream quarantine` does."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import fields, replace

import httpx
from confluent_kafka import Consumer, Message

from agentstream.budgets.controls import set_kill_switch
from agentstream.client.journal import type_of
from agentstream.codec import AvroCodec, DecodeError
from agentstream.config import Settings
from agentstream.credentials.signing_keys import component_keyring
from agentstream.events import TERMINAL_TYPES, AlertChanged, AlertRuleSet, Event, RunEvent
from agentstream.judge.judging import Judge
from agentstream.judge.policy import JudgePolicies
from agentstream.kafka.consumer import consumer_config, fetch_batch, positions_since
from agentstream.kafka.table import TopicTable, put_record
from agentstream.monitor.alerts import AlertBook, AlertChange
from agentstream.monitor.rules import AlertRuleError, parse_rule_json
from agentstream.monitor.signals import Signals
from agentstream.registry import admin
from agentstream.rollout.admin import roll_back
from agentstream.security.journal_trust import JournalVerifier, journal_auth_enabled
from agentstream.topics import CONTROL, JOURNAL, load_topics

log = logging.getLogger(__name__)

WANTED = frozenset({
    "RunStarted", "LlmCallRequested", "ToolCallRequested", "ToolCallAuthorized", "ToolCallCompleted",
    "LoopDetected", "BudgetReserved", "BudgetSettled", "EvalVerdict", "JudgeVerdict", *TERMINAL_TYPES,
})  # fmt: skip
DEFAULT_LOOKBACK_S = 3600
WEBHOOK_TIMEOUT_S = 5.0


def alert_key(change: AlertChange) -> str:
    return f"alert/{change.rule.rule_id}/{change.group.text}"


class ControlReader(TopicTable):
    """The monitor's one reader of the control topic: alert rules into the book, judge policies
    into theirs."""

    def __init__(self, settings: Settings, book: AlertBook, policies: JudgePolicies) -> None:
        super().__init__(settings, [load_topics(settings.topic_prefix)[CONTROL].name])
        self.book = book
        self.policies = policies

    def _on_event(self, event: Event) -> None:
        self.policies.apply(event)
        if not isinstance(event, AlertRuleSet):
            return
        if event.deleted:
            self.book.drop_rule(event.rule_id)
            return
        try:
            self.book.set_rule(parse_rule_json(event.rule_json))
        except AlertRuleError as exc:  # set around the CLI's check: refused here as well, loudly
            log.warning("alert rule %s ignored: %s", event.rule_id, exc)


class Monitor:
    def __init__(self, settings: Settings, *, tick_s: float = 1.0, lookback_s: int | None = None) -> None:
        self.settings = settings
        self.tick_s = tick_s
        self.lookback_s = lookback_s
        self.book = AlertBook()
        self.signals = Signals()
        self.codec = AvroCodec()
        self.verifier = JournalVerifier(component_keyring(settings, "admin")) if journal_auth_enabled() else None
        self.journal_ms = 0  # the latest journal time read: the windows' clock
        self.records = 0
        self.refused = 0
        self.changes: list[AlertChange] = []
        self.judge: Judge | None = None  # set while running: grades the sampled runs that end

    def feed(self, msg: Message) -> None:
        type_name = type_of(msg)
        if type_name not in WANTED:
            return
        if self.verifier is not None and self.verifier.problem(msg, type_name) is not None:
            self.refused += 1  # not the platform's record: it rates nothing
            return
        try:
            event = self.codec.decode(msg.value())
        except DecodeError:
            return
        ts_ms = msg.timestamp()[1]
        self.journal_ms = max(self.journal_ms, ts_ms)
        if isinstance(event, RunEvent):
            for sample in self.signals.feed(event, ts_ms):
                self.book.add(sample)
            if self.judge is not None:
                self.judge.observe(event)

    async def run(self, stop: asyncio.Event) -> None:
        policies = JudgePolicies()
        control = ControlReader(self.settings, self.book, policies)
        await control.start()
        self.judge = Judge(self.settings, policies)
        topic = load_topics(self.settings.topic_prefix)[JOURNAL].name
        consumer = Consumer(
            consumer_config(
                self.settings.bootstrap_servers, self.settings.kafka_extra, {"group.id": "agentstream-reader"}
            )
        )
        try:
            await asyncio.to_thread(self._assign, consumer, topic)
            next_tick = time.monotonic() + self.tick_s
            async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT_S, follow_redirects=False) as http:
                while not stop.is_set():
                    for msg in await asyncio.to_thread(fetch_batch, consumer, 2000, 0.2):
                        if msg.error() is None:
                            self.records += 1
                            self.feed(msg)
                    control.poll()
                    await self.judge.step()
                    if time.monotonic() >= next_tick:
                        next_tick = time.monotonic() + self.tick_s
                        for change in self.book.tick(self.journal_ms or int(time.time() * 1000)):
                            try:
                                await self._act(change, http)
                            except Exception:  # one alert's record failing must not stop the watch
                                log.exception("alert %s not recorded", alert_key(change))
        finally:
            await asyncio.to_thread(consumer.close)
            control.close()
            await self.judge.aclose()

    def _assign(self, consumer: Consumer, topic: str) -> None:
        windows = [rule.window_s for rule in self.book.rules.values()]
        lookback = self.lookback_s if self.lookback_s is not None else max(windows, default=DEFAULT_LOOKBACK_S)
        starts, _ends = positions_since(consumer, topic, int(time.time() * 1000) - lookback * 1000)
        consumer.assign(starts)

    async def _act(self, change: AlertChange, http: httpx.AsyncClient) -> None:
        rule, group = change.rule, change.group
        taken = "cleared" if not change.raised else "alerted"
        try:
            if change.raised and rule.action == "halt_tenant":
                await set_kill_switch(self.settings, "tenant", group.tenant, engaged=True, set_by="monitor",
                                      reason=f"alert {rule.rule_id}: {rule.metric} {change.value:.4g} > {rule.threshold:g}")  # fmt: skip
                taken = f"tenant {group.tenant} halted (kill switch)"
            elif change.raised and rule.action == "disable_tool":
                catalog = await admin.read_catalog(self.settings)
                owner = group.tenant if catalog.latest(group.tenant, group.tool) is not None else ""
                await admin.switch_tool(self.settings, owner, group.tool, disabled=True, by="monitor",
                                        reason=f"alert {rule.rule_id}: {rule.metric} {change.value:.4g} > {rule.threshold:g}")  # fmt: skip
                taken = f"tool {group.tool} ({owner or 'platform'}) disabled"
            elif change.raised and rule.action == "rollback":
                why = f"alert {rule.rule_id}: {rule.metric} {change.value:.4g} > {rule.threshold:g} on {group.version}"
                rolled = await roll_back(self.settings, why, "monitor", candidate=group.version)
                taken = f"rollout of {group.version} rolled back" if rolled else f"{group.version} is not rolling out"
        except Exception as exc:  # the alert is still recorded, with why its action failed
            taken = f"{rule.action} failed: {type(exc).__name__}: {str(exc)[:200]}"
        event = AlertChanged(
            event_id=alert_key(change), rule_id=rule.rule_id, metric=rule.metric, tenant_id=group.tenant,
            tool=group.tool, version=group.version, raised=change.raised, value=change.value,
            threshold=rule.threshold, samples=change.samples, window_s=rule.window_s, action=rule.action,
            action_taken=taken, at_ms=change.at_ms,
        )  # fmt: skip
        if rule.webhook:
            event = await self._notify(http, rule.webhook, event)
        await put_record(self.settings, load_topics(self.settings.topic_prefix)[CONTROL].name, event)
        self.changes.append(change)
        log.warning("alert %s %s: %s %.4g (threshold %g, %d samples): %s", alert_key(change),
                    "raised" if change.raised else "cleared", rule.metric, change.value, rule.threshold,
                    change.samples, event.action_taken)  # fmt: skip

    async def _notify(self, http: httpx.AsyncClient, url: str, event: AlertChanged) -> AlertChanged:
        body = {f.name: getattr(event, f.name) for f in fields(event)}
        try:
            response = await http.post(url, json=body)
            note = f"webhook {response.status_code}"
        except httpx.HTTPError as exc:
            note = f"webhook failed: {type(exc).__name__}"
        return replace(event, action_taken=f"{event.action_taken}; {note}")
