"""Which runs a judge grades: a per-tenant sampling rate, with the judge run's model and budget.

The sample is a pure function of the run id: a restarted monitor, or a second one, picks the same
runs, and a run is never graded twice under one rubric (its judge run's id is derived from it)."""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, dataclass

import orjson

from agentstream.config import Settings
from agentstream.events import Event, JudgePolicySet
from agentstream.kafka.table import put_record
from agentstream.routing.tiers import JUDGE
from agentstream.topics import CONTROL, load_topics

JUDGE_RUN_PREFIX = "judge-"


class JudgePolicyError(ValueError):
    """A judge policy that cannot be set: the message names the field."""


@dataclass(frozen=True, slots=True)
class JudgePolicy:
    tenant: str
    rate: float  # the share of the tenant's ended runs graded, 0..1
    model: str = JUDGE  # the judge run's model: the `judge` tier of the routes file by default
    budget_usd: float = 0.05  # each judge run's hard cost cap

    def check(self) -> JudgePolicy:
        if not (isinstance(self.rate, int | float) and math.isfinite(self.rate) and 0.0 <= self.rate <= 1.0):
            raise JudgePolicyError("rate must be a share of runs in 0..1")
        if not (isinstance(self.budget_usd, int | float) and math.isfinite(self.budget_usd) and self.budget_usd > 0):
            raise JudgePolicyError("budget_usd must be a positive number (a judge run is budgeted like any run)")
        if not self.tenant or not isinstance(self.model, str) or not self.model:
            raise JudgePolicyError("a judge policy needs a tenant and a model")
        return self

    def to_json(self) -> str:
        return orjson.dumps(asdict(self)).decode()


def sampled(run_id: str, rate: float) -> bool:
    """Whether `run_id` is in the sample: its hash below `rate` of the hash space."""
    if run_id.startswith(JUDGE_RUN_PREFIX):
        return False  # a judge run is never judged
    digest = int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:8], "big")
    return digest < rate * 2**64


def judge_run_id(run_id: str) -> str:
    return f"{JUDGE_RUN_PREFIX}{run_id}"


class JudgePolicies:
    """The tenants' judge policies, from the control records a reader applies (the monitor's one
    reader of the control topic feeds this and its alert rules)."""

    def __init__(self) -> None:
        self.policies: dict[str, JudgePolicy] = {}

    def apply(self, event: Event) -> None:
        if isinstance(event, JudgePolicySet):
            try:
                self.policies[event.tenant_id] = JudgePolicy(**orjson.loads(event.policy_json)).check()
            except (TypeError, ValueError, orjson.JSONDecodeError):
                self.policies.pop(event.tenant_id, None)


async def set_judge_policy(settings: Settings, policy: JudgePolicy, by: str) -> JudgePolicySet:
    policy.check()
    event = JudgePolicySet(f"judge/{policy.tenant}", policy.tenant, policy.to_json(), by, int(time.time() * 1000))
    await put_record(settings, load_topics(settings.topic_prefix)[CONTROL].name, event)
    return event
