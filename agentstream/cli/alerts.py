"""`agentstream alerts ...`, `agentstream judge policy` and `agentstream monitor`: online alert
rules and the alerts they raised, a tenant's judge sampling, and the process that watches the
journal for both (docs/evaluation.md, "Online alerts", "LLM-as-judge").
A refused rule is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from datetime import UTC, datetime

from agentstream.config import Settings
from agentstream.judge.policy import JudgePolicy, JudgePolicyError, set_judge_policy
from agentstream.monitor.admin import delete_rule, read_alerts, set_rule
from agentstream.monitor.daemon import Monitor
from agentstream.monitor.rules import ACTIONS, GROUPS, METRICS, AlertRuleError, parse_rule
from agentstream.routing.tiers import JUDGE


def add_alerts_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    alerts = sub.add_parser("alerts", help="online alert rules (rolling rates per tenant, tool, version) and alerts")
    asub = alerts.add_subparsers(dest="alerts_command", required=True)
    rule = asub.add_parser("rule", help="set or delete an alert rule")
    rsub = rule.add_subparsers(dest="rule_command", required=True)
    put = rsub.add_parser("set", help="set (or replace) a rule")
    put.add_argument("rule_id")
    put.add_argument("--metric", required=True, choices=list(METRICS))
    put.add_argument("--threshold", required=True, type=float, help="alert when the window's value is above it")
    put.add_argument("--group-by", default="tenant", choices=GROUPS)
    put.add_argument("--tenant", default="", help="only this tenant (default: every tenant, each its own windows)")
    put.add_argument("--window-s", type=int, default=300)
    put.add_argument("--min-samples", type=int, default=10, help="no alert on fewer samples in the window")
    put.add_argument("--action", default="alert", choices=ACTIONS)
    put.add_argument("--webhook", default="", help="POST each raise and clear to this URL as JSON")
    drop = rsub.add_parser("delete", help="delete a rule")
    drop.add_argument("rule_id")
    asub.add_parser("rules", help="the rules in force")
    lst = asub.add_parser("list", help="alerts raised now (with --all, cleared ones too)")
    lst.add_argument("--all", action="store_true")
    alerts.set_defaults(handler=run_alerts_command)
    judge = sub.add_parser("judge", help="LLM-as-judge: grade a sampled share of a tenant's runs")
    jsub = judge.add_subparsers(dest="judge_command", required=True)
    pol = jsub.add_parser("policy", help="set a tenant's judge sampling (a rate of 0 stops it)")
    pol.add_argument("tenant")
    pol.add_argument("--rate", type=float, required=True, help="share of the tenant's ended runs graded, 0..1")
    pol.add_argument("--model", default=JUDGE, help="the judge run's model (default: the routes file's judge tier)")
    pol.add_argument("--budget-usd", type=float, default=0.05, help="each judge run's hard cost cap")
    judge.set_defaults(handler=run_judge_command)
    monitor = sub.add_parser("monitor", help="watch the journal and raise the alert rules' alerts, until Ctrl-C")
    monitor.add_argument("--tick-s", type=float, default=1.0, help="how often the windows are judged")
    monitor.set_defaults(handler=run_monitor_command)


async def run_alerts_command(args: argparse.Namespace) -> int:
    return await alerts_command(Settings.from_env(), args)


async def alerts_command(settings: Settings, args: argparse.Namespace) -> int:
    try:
        match args.alerts_command:
            case "rule" if args.rule_command == "set":
                rule = parse_rule({
                    "rule_id": args.rule_id, "metric": args.metric, "threshold": args.threshold,
                    "group_by": args.group_by, "tenant": args.tenant, "window_s": args.window_s,
                    "min_samples": args.min_samples, "action": args.action, "webhook": args.webhook,
                })  # fmt: skip
                await set_rule(settings, rule, by="cli")
                print(f"alert rule {rule.rule_id} set: {rule.metric} > {rule.threshold:g} per {rule.group_by}, "
                      f"{rule.window_s}s window, at least {rule.min_samples} samples, then {rule.action}")  # fmt: skip
            case "rule":
                await delete_rule(settings, args.rule_id, by="cli")
                print(f"alert rule {args.rule_id} deleted")
            case "rules":
                for rule in sorted((await read_alerts(settings)).rules.values(), key=lambda r: r.rule_id):
                    print(f"{rule.rule_id:<24} {rule.metric:<22} > {rule.threshold:<8g} per {rule.group_by:<7} "
                          f"{rule.tenant or '*':<12} {rule.window_s}s/{rule.min_samples} {rule.action}")  # fmt: skip
            case "list":
                for alert in sorted((await read_alerts(settings)).alerts.values(), key=lambda a: a.at_ms):
                    if alert.raised or args.all:
                        when = datetime.fromtimestamp(alert.at_ms / 1000, UTC).isoformat(timespec="seconds")
                        state = "RAISED " if alert.raised else "cleared"
                        where = "/".join(x for x in (alert.tenant_id, alert.tool, alert.version) if x)
                        print(f"{state} {when} {alert.rule_id:<20} {where:<28} {alert.metric} {alert.value:.4g} "
                              f"> {alert.threshold:g} ({alert.samples} samples): {alert.action_taken}")  # fmt: skip
    except AlertRuleError as exc:
        print(f"agentstream alerts: {exc}", file=sys.stderr)
        return 2
    return 0


async def run_judge_command(args: argparse.Namespace) -> int:
    try:
        policy = JudgePolicy(args.tenant, args.rate, args.model, args.budget_usd).check()
        await set_judge_policy(Settings.from_env(), policy, by="cli")
    except JudgePolicyError as exc:
        print(f"agentstream judge: {exc}", file=sys.stderr)
        return 2
    print(f"judge for {policy.tenant}: {policy.rate:.0%} of ended runs, model {policy.model}, "
          f"${policy.budget_usd:g} per judge run (graded by the running monitor)")  # fmt: skip
    return 0


async def run_monitor_command(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await Monitor(Settings.from_env(), tick_s=args.tick_s).run(stop)
    return 0
