"""The labelled trajectories of bench/eval.py: scripted-model scenarios, half clean, half broken.

Deterministic (a seeded generator): `bench/eval.py --regenerate` writes them to bench/eval_set/.
Clean ones are multi-step and varied: numbers and identifiers flow from the task and from tool
results into later arguments and the answer, formatted as a model would (1,240 for 1240). Each
broken one is a clean one with one fault and a final answer that still looks right.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from agentstream.processors.tool_executor.builtin import evaluate_expression, format_number

KINDS = ("wrong_tool", "invented_fact", "ungrounded_argument", "skipped_step", "intent_mismatch", "repetition")
TOOLS = ["calculator", "lookup", "transfer_funds", "sleep_ms", "get_current_time", "convert_time"]
# The bench tenant's evaluation policy: pay only after reading a note; waiting and clocks may repeat.
POLICY = {"requires": {"transfer_funds": ["lookup"]}, "polling": ["sleep_ms", "get_current_time"]}
PAYEES = ["Acme Corp", "Globex Ltd", "Initech Systems", "Umbrella Health", "Stark Industries", "Wayne Foods"]
NOTES = ["idempotency key", "exactly-once", "kafka", "avro", "kraft", "mcp"]
ZONES = ["Europe/Lisbon", "Asia/Tokyo", "America/New_York", "Europe/Berlin", "Australia/Sydney", "America/Chicago"]

Turn = dict[str, Any]


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


def turn(text: str, *calls: dict[str, Any]) -> Turn:
    return {"text": text, "tool_calls": list(calls)}


def calc(expression: str) -> str:
    """What the real calculator tool will answer."""
    return format_number(evaluate_expression(expression))


def clock(at: str, source: str, target: str) -> str:
    """`at` in `source` as a clock time in `target`, on a fixed winter day (the tool uses today's
    date, so in summer an answer may be an hour off: a clock time is never a fact the checks read)."""
    hour, minute = map(int, at.split(":"))
    moment = datetime(2026, 1, 15, hour, minute, tzinfo=ZoneInfo(source))
    return moment.astimezone(ZoneInfo(target)).strftime("%H:%M")


def grouped(number: str) -> str:
    whole, _, frac = number.partition(".")
    return f"{int(whole):,}" + (f".{frac}" if frac else "")


class Case:
    """One trajectory being written: its task, its turns, its label."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.task = ""
        self.turns: list[Turn] = []

    def pick(self, items: list[str]) -> str:
        return items[self.rng.randrange(len(items))]

    def say(self, *options: str) -> str:
        return options[self.rng.randrange(len(options))]


def split_and_pay(c: Case, fault: str = "") -> None:
    """Read a note, add two invoices, split the total, pay one share."""
    a, b, n = c.rng.randrange(1000, 9000), c.rng.randrange(1000, 9000), c.pick(["2", "4", "5"])
    payee, account, note = c.pick(PAYEES), f"ACCT-{c.rng.randrange(10, 9999):04d}", c.pick(NOTES[:2])
    # Invented fact: the task names the invoices, not their amounts, and the model states a total.
    shown = f"invoices {a:,} and {b:,}" if fault != "invented_fact" else f"invoices INV-{a} and INV-{b}"
    c.task = (f"Before paying anything, read the '{note}' note. Then add the {shown} from {payee}, split the "
              f"total {n} ways and transfer one share, in cents, to {account}.")  # fmt: skip
    total = a + b
    share = calc(f"{total} / {n}")
    cents = calc(f"{share} * 100 // 1")
    if fault != "skipped_step":
        c.turns.append(turn(c.say(f"First the {note} note, with lookup.", "", "Reading the note first."),
                            call("lookup", topic=note)))  # fmt: skip
    if fault == "wrong_tool":
        c.turns.append(turn("", call("lookup", topic=c.pick(NOTES[2:]))))
    elif fault == "invented_fact":
        c.turns.append(turn(f"The two invoices come to {total:,} in the ledger; splitting.",
                            call("calculator", expression=f"{total} / {n}")))  # fmt: skip
    else:
        c.turns.append(turn(c.say("Now the calculator for the total per share.", "", "Splitting the total."),
                            call("calculator", expression=f"({a} + {b}) / {n}")))  # fmt: skip
    c.turns.append(turn("", call("calculator", expression=f"{share} * 100 // 1")))
    paid_to = account if fault != "ungrounded_argument" else f"ACCT-{(int(account[5:]) + 1) % 10000:04d}"
    text = c.say("Paying the share with transfer_funds.", "", f"Sending {cents} cents.")
    if fault == "intent_mismatch":
        text = "Double-checking the amount with the calculator."
    c.turns.append(
        turn(text, call("transfer_funds", to_account=paid_to, amount_cents=int(float(cents)), memo=f"{payee} share"))
    )
    if fault == "repetition":
        c.turns.append(turn("Re-reading the note to be sure.", call("lookup", topic=note)))
    c.turns.append(turn(f"Transferred {cents} cents ({grouped(share)} per share of {n}) to {account} for {payee}."))


def knowledge_and_sum(c: Case, fault: str = "") -> None:
    """Two notes read at once, a unit conversion computed, both reported."""
    first, second = c.rng.sample(NOTES[2:], 2)
    days = c.rng.randrange(100, 999)
    c.task = (f"Summarise the {first} and {second} notes, and tell me how many minutes {days} days of "
              f"retention is.")  # fmt: skip
    minutes = calc(f"{days} * 24 * 60")
    c.turns.append(turn(c.say("Reading both notes.", "", "I'll use lookup for both."),
                        call("lookup", topic=first), call("lookup", topic=second)))  # fmt: skip
    if fault == "repetition":
        c.turns.append(turn("", call("lookup", topic=second)))
    if fault == "wrong_tool":
        c.turns.append(turn("", call("get_current_time", timezone=c.pick(ZONES))))
    elif fault == "intent_mismatch":
        c.turns.append(turn("Computing the minutes with calculator.", call("lookup", topic=c.pick(NOTES[:2]))))
        c.turns.append(turn("", call("calculator", expression=f"{days} * 24 * 60")))
    elif fault == "invented_fact":
        c.turns.append(
            turn(f"{days} days is {int(days) * 24} hours.", call("calculator", expression=f"{int(days) * 24} * 60"))
        )
    elif fault == "ungrounded_argument":
        c.turns.append(turn("", call("calculator", expression=f"{days + 1} * 24 * 60 - 1440")))
    else:
        c.turns.append(turn(c.say("", "Now the minutes.", "calculator for the minutes."),
                            call("calculator", expression=f"{days} * 24 * 60")))  # fmt: skip
    if fault == "skipped_step":  # pays a note's price without having read the pricing note
        c.task += f" Then pay the {days} cents fee to ACCT-{days:04d}."
        c.turns.insert(
            0, turn("", call("transfer_funds", to_account=f"ACCT-{days:04d}", amount_cents=days, memo="fee"))
        )
        c.turns.append(turn("", call("lookup", topic="idempotency key")))
    names = {"kafka": "Apache Kafka", "avro": "Apache Avro", "kraft": "KRaft", "mcp": "The Model Context Protocol"}
    c.turns.append(turn(f"{names[first]} and {names[second]} are summarised above; {days} days are "
                        f"{grouped(minutes)} minutes."))  # fmt: skip


def meeting_times(c: Case, fault: str = "") -> None:
    """A time converted into two zones, after a look at the clock, with a short wait."""
    source, one, two = c.rng.sample(ZONES, 3)
    at = f"{c.rng.randrange(7, 20):02d}:{c.pick(['00', '15', '30', '45'])}"
    wait, calls, length = c.rng.randrange(100, 400), c.rng.randrange(3, 9), c.pick(["45", "50", "60", "90"])
    c.task = (f"A series of {calls} calls of {length} minutes starts at {at} {source} time. Check the clock in "
              f"{source}, wait {wait} ms, check again, then tell me what {at} is in {one} and in {two}, and how "
              f"many minutes the series takes.")  # fmt: skip
    minutes = calc(f"{calls} * {length}")
    c.turns.append(
        turn(c.say("Looking at the clock.", "", "get_current_time first."), call("get_current_time", timezone=source))
    )
    c.turns.append(turn("", call("sleep_ms", ms=wait)))
    c.turns.append(
        turn("", call("sleep_ms", ms=wait))
        if c.rng.random() < 0.5
        else turn("", call("get_current_time", timezone=source))
    )
    target_two = two if fault != "ungrounded_argument" else next(z for z in ZONES if z not in (source, one, two))
    convert = [call("convert_time", source_timezone=source, time=at, target_timezone=one),
               call("convert_time", source_timezone=source, time=at, target_timezone=target_two)]  # fmt: skip
    if fault == "intent_mismatch":
        c.turns.append(turn("Converting with convert_time now.", call("calculator", expression=f"{wait} * 2")))
        c.turns.append(turn("", *convert))
    elif fault == "repetition":
        c.turns.append(turn("", *convert))
        c.turns.append(turn("", convert[0]))
    elif fault == "invented_fact":
        c.turns.append(turn(f"The office code for {one} is OFC-{wait}7.", *convert))
    else:
        c.turns.append(turn(c.say("", "Converting both.", "Using convert_time for both zones."), *convert))
    if fault == "skipped_step":
        c.turns.append(turn("", call("transfer_funds", to_account="ACCT-0001", amount_cents=wait, memo="booking")))
        c.task += f" Book it: pay {wait} cents to ACCT-0001."
    if fault == "wrong_tool":  # the clock again instead of the arithmetic; the total is right anyway
        c.turns.append(turn("", call("get_current_time", timezone=one)))
    else:
        c.turns.append(turn(c.say("", "Now the length of the series.", "calculator for the total."),
                            call("calculator", expression=f"{calls} * {length}")))  # fmt: skip
    code = f" (office code OFC-{wait}7)" if fault == "invented_fact" else ""
    c.turns.append(turn(f"{at} in {source} is {clock(at, source, one)} in {one}{code} and {clock(at, source, two)} in "
                        f"{two}; the series of {calls} calls takes {grouped(minutes)} minutes."))  # fmt: skip


def refund_flow(c: Case, fault: str = "") -> None:
    """A refund: read the policy note, compute fee-adjusted amounts, pay, report the numbers."""
    price, fee = round(c.rng.uniform(150, 900), 2), c.pick(["15", "25", "35"])
    payee, account = c.pick(PAYEES), f"REF-{c.rng.randrange(100, 999)}-{c.pick(['EU', 'US', 'JP'])}"
    c.task = (f"{payee} returned an order of ${price:,.2f}. Read the 'exactly-once' note, take the {fee} dollar "
              f"restocking fee off, and refund the rest in cents to {account}.")  # fmt: skip
    rest = calc(f"{price} - {fee}")
    cents = calc(f"({price} - {fee}) * 100 // 1")
    if fault != "skipped_step":
        c.turns.append(turn("", call("lookup", topic="exactly-once")))
    if fault == "wrong_tool":
        c.turns.append(
            turn("", call("convert_time", source_timezone="UTC", time="12:00", target_timezone="Asia/Tokyo"))
        )
    else:
        c.turns.append(turn(c.say("", "Net amount first.", "Let me use the calculator."),
                            call("calculator", expression=f"{price} - {fee}")))  # fmt: skip
    expression = f"({price} - {fee}) * 100 // 1"
    if fault == "invented_fact":
        c.turns.append(turn(f"The order also had a {int(price) + 37}.00 shipping line; using the net.",
                            call("calculator", expression=f"{int(price) + 37} - {int(price) + 37} + {expression}")))  # fmt: skip
    else:
        c.turns.append(turn("", call("calculator", expression=expression)))
    amount = int(float(cents))
    target = account if fault != "ungrounded_argument" else account.replace("REF-", "REF-1")
    pay = call("transfer_funds", to_account=target, amount_cents=amount, memo=f"refund {payee}")
    if fault == "intent_mismatch":
        c.turns.append(turn("Checking the note again with lookup.", pay))
    else:
        c.turns.append(turn(c.say("", "Refunding now.", "transfer_funds for the refund."), pay))
    if fault == "repetition":
        c.turns.append(turn("", call("calculator", expression=expression)))
    c.turns.append(turn(f"Refunded {grouped(rest)} dollars ({amount} cents) to {account} for {payee}, after the "
                        f"{fee} dollar fee."))  # fmt: skip


SUPPLIERS = ["Müller & Söhne GmbH", "Société Générale Services", "Åkesson Bygg AB", "Nguyễn Trading Co", "Żabka Polska"]


def supplier_invoices(c: Case, fault: str = "") -> None:
    """A lookup that fails first (an unknown topic), three invoices summed and paid; unicode names."""
    supplier = c.pick(SUPPLIERS)
    amounts = [f"{c.rng.randrange(200, 3000)}.{c.rng.randrange(0, 100):02d}" for _ in range(3)]
    account = f"{c.pick(['DE', 'FR', 'SE', 'PL'])}-{c.rng.randrange(1000, 9999)}-{supplier[:2].upper()}"
    shown = ", ".join(f"{float(a):,.2f}" for a in amounts[:2]) + f" and {float(amounts[2]):,.2f}"
    c.task = (f"{supplier} sent 3 invoices of {shown} EUR. Read the note on Kafka transactions first, total "
              f"them, and pay the total in cents to {account}.")  # fmt: skip
    expression = " + ".join(amounts)
    total = calc(expression)
    cents_expression = f"{total} * 100 // 1"
    cents = calc(cents_expression)
    c.turns.append(turn("Looking up the note.", call("lookup", topic="kafka transactions")))
    if fault != "skipped_step":
        c.turns.append(turn(c.say("No note by that name; the list offers exactly-once, so lookup that.", ""),
                            call("lookup", topic="exactly-once")))  # fmt: skip
    if fault == "wrong_tool":
        c.turns.append(turn("", call("get_current_time", timezone="Europe/Berlin")))
    elif fault == "intent_mismatch":
        c.turns.append(turn("Summing the three with the calculator.", call("lookup", topic="kafka")))
        c.turns.append(turn("", call("calculator", expression=expression)))
    else:
        c.turns.append(turn(c.say("", "Adding them up.", "calculator: the three amounts."),
                            call("calculator", expression=expression)))  # fmt: skip
    if fault == "repetition":
        c.turns.append(turn("", call("calculator", expression=expression)))
    c.turns.append(turn("", call("calculator", expression=cents_expression)))
    target = account if fault != "ungrounded_argument" else account[:-2] + account[-1] + account[-2]
    c.turns.append(
        turn("", call("transfer_funds", to_account=target, amount_cents=int(cents), memo=f"{supplier} invoices"))
    )
    reference = " (their reference INV-2291)" if fault == "invented_fact" else ""
    c.turns.append(turn(f"Paid EUR {grouped(total)} ({cents} cents) to {supplier}{reference}, account {account}."))


TEMPLATES: list[Callable[..., None]] = [split_and_pay, knowledge_and_sum, meeting_times, refund_flow, supplier_invoices]


def build(total: int = 200, seed: int = 18) -> list[dict[str, Any]]:
    """`total` trajectories: the first half clean, the second broken, kinds and templates in turn."""
    rng = random.Random(seed)
    out = []
    for index in range(total):
        fault = "" if index < total // 2 else KINDS[index % len(KINDS)]
        c = Case(rng)
        TEMPLATES[(index // 2) % len(TEMPLATES)](c, fault)
        name = f"eval{index:03d}"
        out.append({"name": name, "label": fault or "clean", "task": f"[scenario:{name}] {c.task}", "turns": c.turns})
    return out
