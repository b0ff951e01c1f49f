"""`agentstream secrets ...`: store, list and delete tenant secrets for tool calls.

A value is read from stdin (without echo on a terminal) or from a named environment variable,
never from the command line, which other users see in `ps` and shells keep in their history.
Values are sealed here, under the master keys in `<AGENTSTREAM_HOME>/keys/master.json`, before
anything is sent to Kafka. A user error is one line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import UTC, datetime

from agentstream.config import Settings
from agentstream.credentials.errors import CredentialError
from agentstream.credentials.keys import local_key_provider
from agentstream.credentials.store import SecretInfo, delete_secret, list_secrets, put_secret
from agentstream.settings.environ import named


def add_secrets_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    secrets = sub.add_parser("secrets", help="store, list and delete tenant secrets for tools")
    secrets_sub = secrets.add_subparsers(dest="secrets_command", required=True)
    put = secrets_sub.add_parser(
        "put", help="store or replace a secret; the value comes from stdin or --from-env, never an argument"
    )
    put.add_argument("--tenant", required=True)
    put.add_argument("--name", required=True)
    put.add_argument(
        "--tools",
        required=True,
        help="comma-separated tools allowed to receive it, by identity: NAME (the platform's tool), "
        "TENANT/NAME (the tenant's own, bound to its latest version's contract) or OWNER/NAME@DIGEST "
        "(`agentstream tools show` prints each version's identity)",
    )
    put.add_argument("--scopes", default="", help="comma-separated scopes a delegation must carry (default: none)")
    put.add_argument("--from-env", metavar="VAR", help="read the value from this environment variable")
    list_cmd = secrets_sub.add_parser("list", help="a tenant's secrets (names, tools, scopes; never values)")
    list_cmd.add_argument("--tenant", required=True)
    delete = secrets_sub.add_parser("delete", help="delete a secret for good")
    delete.add_argument("--tenant", required=True)
    delete.add_argument("--name", required=True)
    # `main` runs this directly, ahead of `commands.dispatch`, which knows nothing of secrets.
    secrets.set_defaults(handler=run_secrets_command)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _read_value(from_env: str | None) -> str:
    if from_env:
        value = named(from_env)
        if not value:
            raise CredentialError(f"environment variable {from_env} is not set or empty")
        return value
    if sys.stdin.isatty():
        return getpass.getpass("secret value: ")
    value = sys.stdin.read()
    # `echo value | agentstream secrets put ...` appends a newline that is not part of the secret.
    return value.removesuffix("\n").removesuffix("\r")


async def run_secrets_command(args: argparse.Namespace) -> int:
    return await secrets_command(Settings.from_env(), args)


async def secrets_command(settings: Settings, args: argparse.Namespace) -> int:
    try:
        if args.secrets_command == "put":
            value = _read_value(args.from_env)
            provider = local_key_provider(settings)
            info = await put_secret(
                settings, provider, args.tenant, args.name, value, _split(args.tools), _split(args.scopes)
            )
            print(f"stored secret {info.name} for tenant {info.tenant_id}: {_describe(info)}")
        elif args.secrets_command == "delete":
            info = await delete_secret(settings, args.tenant, args.name)
            print(f"deleted secret {info.name} of tenant {info.tenant_id}")
        else:
            _print_secrets(await list_secrets(settings, args.tenant))
    except CredentialError as exc:
        print(f"agentstream: {exc}", file=sys.stderr)
        return 1
    return 0


def _describe(info: SecretInfo) -> str:
    scopes = ",".join(info.scopes) or "-"
    return f"version={info.version} tools={','.join(info.tools)} scopes={scopes}"


def _print_secrets(secrets: list[SecretInfo]) -> None:
    if not secrets:
        print("no secrets (store one with `agentstream secrets put`)")
        return
    print(f"{'name':<32}{'version':>8}  {'created (UTC)':<21}{'tools':<32}scopes")
    for s in secrets:
        created = datetime.fromtimestamp(s.created_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        print(f"{s.name:<32}{s.version:>8}  {created:<21}{','.join(s.tools):<32}{','.join(s.scopes) or '-'}")
