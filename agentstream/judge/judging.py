"""Asking the judge and recording its grade: the I/O half, driven by the monitor's journal tail.

A sampled run that ends is graded by a judge run of its own: requested with the run's trajectory
as its task (agentstream.judge.rubric), the policy's model (the `judge` tier by default), no tools,
and the policy's budget, for the run's tenant, so its cost is the tenant's and on the record like
any run's. When the judge run ends, its answer becomes a `JudgeVerdict` on the judged run; a
judge run that failed, or answered something that is not a grade, is a verdict too (`graded`
false, saying why), never silence. Every id is derived from the judged run's, so a restart
re-reading the same journal asks nothing twice and writes the same verdict."""

from __future__ import annotations

import logging

from agentstream.client.journal import JournalClient, RunBudget, RunRequest
from agentstream.config import Settings
from agentstream.events import TERMINAL_TYPES, JudgeVerdict, RunCompleted, RunEvent
from agentstream.judge.policy import JUDGE_RUN_PREFIX, JudgePolicies, judge_run_id, sampled
from agentstream.judge.rubric import RUBRIC_VERSION, JudgeAnswerError, judge_task, parse_grade

log = logging.getLogger(__name__)


def verdict_id(run_id: str) -> str:
    return f"{run_id}/judge/{RUBRIC_VERSION}"


def verdict_of(judged: str, end: RunEvent) -> JudgeVerdict:
    """The verdict a judge run's last event gives the run it judged."""
    base = {"event_id": verdict_id(judged), "run_id": judged, "tenant_id": end.tenant_id,
            "judge_run_id": end.run_id, "rubric_version": RUBRIC_VERSION}  # fmt: skip
    if isinstance(end, RunCompleted):
        try:
            grade = parse_grade(end.final_answer)
        except JudgeAnswerError as exc:
            return JudgeVerdict(**base, consistent=False, success=False, passed=False, explanation=str(exc),
                                graded=False)  # fmt: skip
        return JudgeVerdict(**base, consistent=grade.consistent, success=grade.success, passed=grade.passed,
                            explanation=grade.explanation, graded=True)  # fmt: skip
    reason = getattr(end, "reason", "")
    return JudgeVerdict(**base, consistent=False, success=False, passed=False,
                        explanation=f"the judge run ended {end.type_name}: {reason}"[:1_000], graded=False)  # fmt: skip


class Judge:
    def __init__(self, settings: Settings, policies: JudgePolicies) -> None:
        self.policies = policies
        self.client = JournalClient(settings)
        self.due: dict[str, str] = {}  # ended sampled run -> its tenant: to be judged
        self.finished: dict[str, RunEvent] = {}  # judge run -> its last event: to be recorded
        self.asked: dict[str, str] = {}  # judge run -> the tenant it was asked for (this process)
        self.requested = 0
        self.recorded = 0

    def observe(self, event: RunEvent) -> None:
        if event.type_name not in TERMINAL_TYPES:
            return
        if event.run_id.startswith(JUDGE_RUN_PREFIX):
            self.finished[event.run_id] = event
            return
        policy = self.policies.policies.get(event.tenant_id)
        if policy is not None and policy.rate > 0 and sampled(event.run_id, policy.rate):
            self.due[event.run_id] = event.tenant_id

    async def step(self) -> None:
        for run_id, tenant in list(self.due.items()):
            del self.due[run_id]
            try:
                await self._ask(run_id, tenant)
            except Exception:  # one run's judging failing must not stop the others, nor the monitor
                log.exception("judging run %s failed", run_id)
        for judge_id, end in list(self.finished.items()):
            del self.finished[judge_id]
            judged = judge_id.removeprefix(JUDGE_RUN_PREFIX)
            if self.asked.pop(judge_id, None) != end.tenant_id and not await self._same_tenant(judged, end.tenant_id):
                log.warning("judge run %s is not of %s's tenant: no verdict written", judge_id, judged)
                continue
            await self.client.append(verdict_of(judged, end))
            self.recorded += 1

    async def _ask(self, run_id: str, tenant: str) -> None:
        policy = self.policies.policies.get(tenant)
        if policy is None:
            return
        events = [e.event for e in await self.client.read_run(run_id)]
        if any(e.event_id == verdict_id(run_id) for e in events):
            return  # graded already (a monitor restarted over the same journal)
        await self.client.request_run(RunRequest(
            task=judge_task(events), model=policy.model, tools=[], max_steps=1, tenant_id=tenant,
            run_id=judge_run_id(run_id), labels={"judge_of": run_id, "rubric": RUBRIC_VERSION},
            budget=RunBudget(usd=policy.budget_usd),
        ))  # fmt: skip
        self.asked[judge_run_id(run_id)] = tenant
        self.requested += 1

    async def _same_tenant(self, run_id: str, tenant: str) -> bool:
        """A verdict is written only on a run of the judge run's own tenant (a judge run asked
        before a restart is checked against the judged run's journal)."""
        entries = await self.client.read_run(run_id)
        return bool(entries) and entries[0].event.tenant_id == tenant

    async def aclose(self) -> None:
        await self.client.aclose()
