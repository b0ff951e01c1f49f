"""`agentstream config`: every setting and its value in this environment (checked against its
type), or, with `--markdown`, the configuration table docs/configuration.md holds."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from agentstream.settings import COMPONENTS, SettingsError, env_name, load
from agentstream.settings.table import markdown


def add_config_parser(sub: Any) -> None:
    config = sub.add_parser(
        "config", help="every setting (environment variable): its value here, or the whole table with --markdown"
    )
    config.add_argument(
        "--markdown", action="store_true", help="print the configuration table (docs/configuration.md) and exit"
    )
    config.set_defaults(handler=config_command)


def current_values() -> list[tuple[str, str]]:
    """(variable, value) for every setting as this process would read it; secrets are masked.
    Raises SettingsError naming every variable whose value does not fit its type."""
    out: list[tuple[str, str]] = []
    problems: list[str] = []
    for cls in COMPONENTS:
        try:
            settings = load(cls)
        except SettingsError as exc:
            problems.extend(exc.problems)
            continue
        for field, info in cls.model_fields.items():
            value = getattr(settings, field)
            shown = "unset" if value in (None, "", {}, ()) else "(hidden)" if not info.repr else str(value)
            out.append((env_name(cls, field), shown))
    if problems:
        raise SettingsError("agentstream", problems)
    return out


async def config_command(args: argparse.Namespace) -> int:
    if args.markdown:
        sys.stdout.write(markdown())
        return 0
    try:
        values = current_values()
    except SettingsError as exc:
        print(f"agentstream config: {exc}", file=sys.stderr)
        return 2
    width = max(len(name) for name, _ in values)
    for name, value in values:
        print(f"{name:<{width}}  {value}")
    return 0
