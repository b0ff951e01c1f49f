"""What every settings class shares: immutable, each field bound to one named environment variable
(`variable(...)`), a blank value counting as unset, and loading that fails with a typed error naming
the variable and the value it could not use."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from pydantic import Field, JsonValue, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

S = TypeVar("S", bound="ComponentSettings")


class SettingsError(ValueError):
    """An environment variable holds a value its setting cannot take."""

    def __init__(self, component: str, problems: list[str]) -> None:
        self.component = component
        self.problems = problems
        super().__init__(f"invalid {component} configuration: " + "; ".join(problems))


class ComponentSettings(BaseSettings):
    """One component's settings. `COMPONENT` names it in the configuration table."""

    COMPONENT: ClassVar[str] = ""
    # Case-sensitive: AGENTSTREAM_X and agentstream_x are different variables to a shell.
    # validate_by_name: code builds them by field name (`ModelSettings(base_url=...)`).
    model_config = SettingsConfigDict(
        frozen=True, extra="ignore", env_ignore_empty=True, case_sensitive=True, validate_by_name=True
    )


def variable(default: Any, name: str, description: str, *, shown_default: str | None = None, **kw: Any) -> Any:
    """A field read from the environment variable `name`. `shown_default` is what the configuration
    table says where the real default is computed (a path under the home, "unset: ...")."""
    extra: dict[str, JsonValue] | None = {"shown_default": shown_default} if shown_default is not None else None
    return Field(default, validation_alias=name, description=description, json_schema_extra=extra, **kw)


def env_name(cls: type[ComponentSettings], field: str) -> str:
    alias = cls.model_fields[field].validation_alias
    if not isinstance(alias, str):
        raise TypeError(f"{cls.__name__}.{field} is not bound to an environment variable (use `variable`)")
    return alias


def load(cls: type[S]) -> S:
    """`cls` read from this process's environment now."""
    try:
        return cls()
    except ValidationError as exc:
        raise SettingsError(cls.COMPONENT or cls.__name__, [_problem(cls, e) for e in exc.errors()]) from None


@functools.cache
def _once(cls: type[ComponentSettings]) -> ComponentSettings:
    return load(cls)


def once(cls: type[S]) -> S:
    """`cls` read from the environment the first time it is asked for, then kept: for what is fixed
    for a process's life and read far from any `Settings` (log level, resource paths, the broker's JVM)."""
    settings = _once(cls)
    assert isinstance(settings, cls)
    return settings


def forget_loaded() -> None:
    """Drops what `once` kept (for tests that load it under another environment)."""
    _once.cache_clear()


def _problem(cls: type[ComponentSettings], error: Any) -> str:
    loc = error.get("loc") or ("?",)
    name = str(loc[0])
    if name in cls.model_fields:
        name = env_name(cls, name)
    # A value kept out of repr (a key, a URL that may carry credentials) is kept out of errors too.
    secret = any(f.validation_alias == name and f.repr is False for f in cls.model_fields.values())
    value = error.get("input")
    shown = "" if isinstance(value, dict) or secret else f" (got {value!r})"
    return f"{name}: {error.get('msg', 'invalid')}{shown}"


def split_pairs(separator: str) -> Callable[[Any], Any]:
    """A before-validator: `"a=1<sep>b=2"` into `{"a": "1", "b": "2"}` (values kept as text)."""

    def parse(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        pairs: dict[str, str] = {}
        for item in value.split(separator):
            if not item.strip():
                continue
            key, sep, rest = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"{item.strip()!r} is not key=value")
            pairs[key.strip()] = rest.strip()
        return pairs

    return parse


def split_list(value: Any) -> Any:
    """A before-validator: `"a, b"` into `("a", "b")`."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value
