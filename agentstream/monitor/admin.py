"""Setting and reading alert rules and alerts on the control topic (the operator's side)."""

from __future__ import annotations

import time

from agentstream.config import Settings
from agentstream.events import AlertChanged, AlertRuleSet, Event
from agentstream.kafka.table import TopicTable, put_record
from agentstream.monitor.rules import AlertRule, AlertRuleError, parse_rule_json
from agentstream.topics import CONTROL, load_topics


def rule_key(rule_id: str) -> str:
    return f"alert-rule/{rule_id}"


class AlertTable(TopicTable):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, [load_topics(settings.topic_prefix)[CONTROL].name])
        self.rules: dict[str, AlertRule] = {}
        self.alerts: dict[str, AlertChanged] = {}

    def _on_event(self, event: Event) -> None:
        if isinstance(event, AlertRuleSet):
            if event.deleted:
                self.rules.pop(event.rule_id, None)
            else:
                try:
                    self.rules[event.rule_id] = parse_rule_json(event.rule_json)
                except AlertRuleError:
                    self.rules.pop(event.rule_id, None)
        elif isinstance(event, AlertChanged):
            self.alerts[event.event_id] = event


async def read_alerts(settings: Settings) -> AlertTable:
    async with AlertTable(settings) as table:
        return table


async def set_rule(settings: Settings, rule: AlertRule, by: str) -> AlertRuleSet:
    parse_rule_json(rule.to_json())  # the monitor reads it back from JSON: refused here if it would be there
    event = AlertRuleSet(rule_key(rule.rule_id), rule.rule_id, rule.to_json(), False, by, int(time.time() * 1000))
    await put_record(settings, load_topics(settings.topic_prefix)[CONTROL].name, event)
    return event


async def delete_rule(settings: Settings, rule_id: str, by: str) -> None:
    if rule_id not in (await read_alerts(settings)).rules:
        raise AlertRuleError(f"no alert rule {rule_id!r} (agentstream alerts rules lists them)")
    event = AlertRuleSet(rule_key(rule_id), rule_id, "{}", True, by, int(time.time() * 1000))
    await put_record(settings, load_topics(settings.topic_prefix)[CONTROL].name, event)
