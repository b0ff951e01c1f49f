"""The only reads of the environment that are not settings fields: a variable whose name is given
at run time (a routes file's `api_key_env`, `secrets put --from-env VAR`), and the values a child
process is handed (its PATH, the platform's whole environment for a processor it spawns)."""

from __future__ import annotations

import os
from collections.abc import Iterable


def named(name: str) -> str | None:
    """The value of the variable `name`, which a user named (not one of ours): None if unset or blank."""
    value = os.environ.get(name)
    return value if value else None


def inherited(names: Iterable[str]) -> dict[str, str]:
    """This process's values of `names` (those that are set), to hand to a child process."""
    return {name: os.environ[name] for name in names if name in os.environ}


def for_child() -> dict[str, str]:
    """A copy of this process's whole environment, to change and hand to a child process."""
    return dict(os.environ)
