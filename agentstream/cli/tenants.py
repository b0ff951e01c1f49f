"""`agentstream tenants ...` and `agentstream keys ...`: tenant and API key administration.

Each command reads or writes the `tenants` topic and starts nothing; a user error (bad id, unknown
tenant or key, bad limit) is one line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from agentstream.config import Settings
from agentstream.tenancy import admin
from agentstream.tenancy.admin import TenancyError
from agentstream.tenancy.directory import ApiKey, Tenant
from agentstream.tenancy.scopes import DEFAULT_SCOPES, SCOPES


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tenants = sub.add_parser("tenants", help="create, update and list tenants")
    tenants_sub = tenants.add_subparsers(dest="tenants_command", required=True)
    create = tenants_sub.add_parser("create", help="create a tenant")
    create.add_argument("tenant_id")
    create.add_argument("--name", help="display name (default: the id)")
    create.add_argument("--rate", type=float, default=5.0, help="requests per second (default 5)")
    create.add_argument("--burst", type=int, default=20, help="requests allowed at once (default 20)")
    create.add_argument("--max-active-runs", type=int, default=50, help="runs in flight at once (default 50)")
    update = tenants_sub.add_parser("update", help="change a tenant's settings; unnamed ones stay")
    update.add_argument("tenant_id")
    update.add_argument("--name")
    update.add_argument("--rate", type=float)
    update.add_argument("--burst", type=int)
    update.add_argument("--max-active-runs", type=int)
    state = update.add_mutually_exclusive_group()
    state.add_argument("--disable", dest="disabled", action="store_true", default=None, help="refuse its keys")
    state.add_argument("--enable", dest="disabled", action="store_false", help="accept its keys again")
    tenants_sub.add_parser("list", help="every tenant and its limits")

    keys = sub.add_parser("keys", help="issue, revoke and list API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    issue = keys_sub.add_parser("issue", help="issue a key for a tenant (shown once)")
    issue.add_argument("tenant_id")
    issue.add_argument("--label", default="", help="what the key is for")
    issue.add_argument(
        "--scopes",
        default="",
        help=f"comma-separated: {', '.join(SCOPES)} (default: {','.join(DEFAULT_SCOPES)}; "
        "deciding approvals needs approvals:decide, admin implies every scope)",
    )
    revoke = keys_sub.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    list_keys = keys_sub.add_parser("list", help="a tenant's keys (ids and labels; never secrets)")
    list_keys.add_argument("tenant_id")


async def tenants_command(settings: Settings, args: argparse.Namespace) -> int:
    try:
        if args.tenants_command == "create":
            tenant = await admin.create_tenant(
                settings, args.tenant_id, args.name or args.tenant_id, args.rate, args.burst, args.max_active_runs
            )
            print(f"created tenant {_describe(tenant)}")
        elif args.tenants_command == "update":
            tenant = await admin.update_tenant(
                settings,
                args.tenant_id,
                name=args.name,
                rate_per_s=args.rate,
                burst=args.burst,
                max_active_runs=args.max_active_runs,
                disabled=args.disabled,
            )
            print(f"updated tenant {_describe(tenant)}")
        else:
            _print_tenants(await admin.list_tenants(settings))
    except TenancyError as exc:
        print(f"agentstream: {exc}", file=sys.stderr)
        return 1
    return 0


async def keys_command(settings: Settings, args: argparse.Namespace) -> int:
    try:
        if args.keys_command == "issue":
            scopes = [s for s in args.scopes.split(",") if s.strip()]
            plaintext = await admin.issue_key(settings, args.tenant_id, args.label, scopes)
            # The key alone on stdout, so `KEY=$(agentstream keys issue ...)` captures just the key.
            print(plaintext)
            print(
                f"issued a key for tenant {args.tenant_id} with scopes {','.join(sorted(scopes or DEFAULT_SCOPES))}. "
                "Store it now: it cannot be shown again (only its hash is kept).",
                file=sys.stderr,
            )
        elif args.keys_command == "revoke":
            key = await admin.revoke_key(settings, args.key_id)
            already = " (it already was)" if key.revoked else ""
            print(f"revoked key {key.key_id} of tenant {key.tenant_id}{already}")
        else:
            _print_keys(await admin.list_keys(settings, args.tenant_id))
    except TenancyError as exc:
        print(f"agentstream: {exc}", file=sys.stderr)
        return 1
    return 0


def _describe(t: Tenant) -> str:
    state = " (disabled)" if t.disabled else ""
    return (
        f"{t.tenant_id}{state}: name={t.name!r} rate={t.rate_per_s:g}/s burst={t.burst} "
        f"max_active_runs={t.max_active_runs}"
    )


def _print_tenants(tenants: list[Tenant]) -> None:
    if not tenants:
        print("no tenants (create one with `agentstream tenants create ID`)")
        return
    print(f"{'tenant':<24}{'status':<10}{'rate/s':>8}{'burst':>7}{'max_runs':>10}  name")
    for t in tenants:
        status = "disabled" if t.disabled else "active"
        print(f"{t.tenant_id:<24}{status:<10}{t.rate_per_s:>8g}{t.burst:>7}{t.max_active_runs:>10}  {t.name}")


def _print_keys(keys: list[ApiKey]) -> None:
    if not keys:
        print("no keys")
        return
    print(f"{'key_id':<14}{'status':<9}{'created (UTC)':<22}{'scopes':<44}label")
    for k in keys:
        created = (
            datetime.fromtimestamp(k.created_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S") if k.created_ms else "-"
        )
        scopes = ",".join(s for s in SCOPES if s in k.effective_scopes)
        print(f"{k.key_id:<14}{'revoked' if k.revoked else 'active':<9}{created:<22}{scopes:<44}{k.label}")
