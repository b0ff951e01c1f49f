"""`agentstream approvals list | approve | deny`: tool calls waiting for a person.

Through the run API when AGENTSTREAM_API_KEY is set (the key's tenant only; the decider on record
is that key, which needs the `approvals:decide` scope, as `POST /v1/approvals/{id}` requires).
Otherwise as the operator, straight on the journal across tenants: the decision is signed with the
platform's approval key, as the gateway signs it, and recorded as `cli:<user>`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable

import orjson

from agentstream.approvals import record_decision
from agentstream.cli.api import api_configured, via_api
from agentstream.client.http import RunsClient
from agentstream.client.journal import JournalClient
from agentstream.client.scan import read_journal
from agentstream.config import Settings
from agentstream.contract.resources import Approval
from agentstream.contract.vocab import ApprovalDecision, ApprovalStatus
from agentstream.events import ApprovalDecided, ApprovalRequested, RunEvent
from agentstream.gateway.views import ApprovalView, approval_outcome
from agentstream.security.signing import Signer, approval_verifies, platform_signers
from agentstream.settings import CliSettings, load


def add_approvals_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    approvals = sub.add_parser("approvals", help="tool calls waiting for a person: list, approve, deny")
    approvals.set_defaults(handler=run_approvals_command)
    asub = approvals.add_subparsers(dest="approvals_command", required=True)
    lst = asub.add_parser("list", help="approval requests (default: the pending ones)")
    lst.add_argument("--status", choices=[*ApprovalStatus, "all"], default=ApprovalStatus.PENDING.value)
    lst.add_argument("--tenant", help="only this tenant (operator path only; the API shows the key's tenant)")
    lst.add_argument("--json", action="store_true")
    for verb, what in (
        (ApprovalDecision.APPROVE, "the call runs"),
        (ApprovalDecision.DENY, "the model sees an error observation instead"),
    ):
        p = asub.add_parser(verb, help=f"{verb} one pending request: {what}")
        p.add_argument("approval_id", help="the id `approvals list` shows")
        p.add_argument("--reason", default="", help="recorded with the decision")


async def run_approvals_command(args: argparse.Namespace) -> int:
    if api_configured():
        not_found = f"no approval {getattr(args, 'approval_id', '')} for this API key's tenant"
        return await via_api(lambda client: _via_api(client, args), not_found=not_found)
    return await _as_operator(Settings.from_env(), args)


async def _via_api(client: RunsClient, args: argparse.Namespace) -> int:
    if args.approvals_command == "list":
        _print(await client.approvals(None if args.status == "all" else args.status), args.json)
        return 0
    decided = await client.decide(args.approval_id, args.approvals_command == ApprovalDecision.APPROVE, args.reason)
    _print_decided(args, decided)
    return 0


async def _as_operator(settings: Settings, args: argparse.Namespace) -> int:
    signer = platform_signers(settings).approval
    journal = await read_journal(settings)
    found = fold_approvals((e.event for entries in journal.values() for e in entries), signer)
    if args.approvals_command == "list":
        shown = [
            a.resource() for a in found.values()
            if (args.status == "all" or a.status == args.status) and args.tenant in (None, a.request.tenant_id)
        ]  # fmt: skip
        _print(shown, args.json)
        return 0
    approval = found.get(args.approval_id)
    if approval is None:
        print(f"no approval {args.approval_id} in the journal (see `agentstream approvals list`)", file=sys.stderr)
        return 1
    if approval.status != ApprovalStatus.PENDING:
        print(f"approval {args.approval_id} is already {approval.status} ({approval.decided_by})", file=sys.stderr)
        return 1
    approve = args.approvals_command == ApprovalDecision.APPROVE
    client = JournalClient(settings)
    try:
        await record_decision(
            client, signer, approval.request, approved=approve, decided_by=f"cli:{load(CliSettings).user}",
            reason=args.reason or args.approvals_command,
        )  # fmt: skip
    finally:
        await client.aclose()
    _print_decided(args, approval.resource())
    return 0


def fold_approvals(events: Iterable[RunEvent], signer: Signer) -> dict[str, ApprovalView]:
    """Every approval request and its outcome, as the gateway's approvals API shows them: the first
    verified decision wins, as in the policy gate; one that does not verify is ignored."""
    found: dict[str, ApprovalView] = {}
    for event in events:
        if isinstance(event, ApprovalRequested):
            found.setdefault(event.approval_id, ApprovalView(event))
        elif isinstance(event, ApprovalDecided):
            approval = found.get(event.approval_id)
            if (
                approval is None
                or approval.status != ApprovalStatus.PENDING
                or approval.request.call_id != event.call_id
            ):
                continue
            if not approval_verifies(signer, event):
                continue
            approval.status = approval_outcome(event)
            approval.decided_by, approval.reason, approval.decided_ms = event.decided_by, event.reason, event.decided_ms
    return dict(sorted(found.items(), key=lambda item: (item[1].request.requested_ms, item[0])))


def _print(approvals: list[Approval], as_json: bool) -> None:
    if as_json:
        data = [a.model_dump(mode="json") for a in approvals]
        print(orjson.dumps({"data": data}, option=orjson.OPT_INDENT_2).decode())
        return
    if not approvals:
        print("no approval requests")
        return
    now_ms = time.time() * 1000
    for a in approvals:
        left = f"{max(0.0, (a.expires_at_ms - now_ms) / 1000):.0f}s left" if a.status == ApprovalStatus.PENDING else ""
        print(f"{a.id}  {a.status:<8} {a.tool} ({a.tier})  run {a.run_id}  {left}".rstrip())
        print(f"    arguments {a.arguments_json}")
        if a.decided_by:
            print(f"    decided by {a.decided_by}: {a.decision_reason or ''}")


def _print_decided(args: argparse.Namespace, approval: Approval) -> None:
    verb = ApprovalStatus.APPROVED if args.approvals_command == ApprovalDecision.APPROVE else ApprovalStatus.DENIED
    print(f"{verb} {approval.id}: {approval.tool} {approval.arguments_json} (run {approval.run_id})")
