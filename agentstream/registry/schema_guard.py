"""A tenant tool's `input_schema` is tenant-written code that every tool call runs twice (in the
orchestrator's `evolve` and again in the policy gate), on every replay too. So it is bounded when it
is registered and when it is compiled, and validating with it is bounded in work:

- the schema: at most MAX_SCHEMA_BYTES of canonical JSON and MAX_SCHEMA_DEPTH levels of nesting,
  valid Draft 2020-12, only local `$ref`s (no remote retrieval, which jsonschema would otherwise do
  with urllib from inside a processor);
- its regular expressions (`pattern`, `patternProperties` keys and the meta-schema's `format:
  regex`) run on RE2, a linear-time engine, never Python `re` (a backtracking engine: `^(a|a)*$`
  against "a"*40+"!" takes hours). A pattern RE2 cannot compile (backreferences, lookaround) or that
  is too long is refused;
- the arguments: at most MAX_ARGUMENT_BYTES and MAX_ARGUMENT_DEPTH;
- the validation: a budget of VALIDATION_STEPS keyword evaluations, each regex match charged for
  its worst-case work (text length x program size). The bound is counted, not timed, so that a
  replay of the journal reaches the same verdict as the live run did.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
import re2
import referencing
from jsonschema import Draft202012Validator, FormatChecker, ValidationError
from jsonschema.exceptions import best_match
from jsonschema.protocols import Validator
from jsonschema.validators import extend

MAX_SCHEMA_BYTES = 32 * 1024
MAX_SCHEMA_DEPTH = 32
MAX_PATTERN_CHARS = 1000
MAX_ARGUMENT_BYTES = 512 * 1024
MAX_ARGUMENT_DEPTH = 64
VALIDATION_STEPS = 50_000  # about 0.2 s of the slowest keywords measured (4 us a step)
# Keyword evaluations nested inside each other (a `$ref` cycle recurses forever otherwise).
MAX_NESTING = 96
# RE2's cost of one match is at most (text length x program size) units; this many units are charged
# as one step, so that the regex share of the budget is measured (3.5-4.5 ns a unit) to under 0.1 s.
REGEX_UNITS_PER_STEP = 200

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused pattern is reported to its author, not to our stderr


class SchemaRefused(ValueError):
    """A schema the platform will not run; the message says why and where, fit to show as is."""


class ValidationBudgetExceeded(Exception):
    """Validating one call took more work than any reasonable schema needs."""


@dataclass(slots=True)
class _Budget:
    steps: int
    nesting: int = 0

    def charge(self, steps: int) -> None:
        self.steps -= steps
        if self.steps < 0:
            raise ValidationBudgetExceeded(f"validation needed more than {VALIDATION_STEPS} steps")


_BUDGET: ContextVar[_Budget | None] = ContextVar("schema_guard_budget", default=None)


@lru_cache(maxsize=4096)
def _compile(pattern: str) -> Any:
    if len(pattern) > MAX_PATTERN_CHARS:
        raise SchemaRefused(f"pattern is {len(pattern)} characters long; at most {MAX_PATTERN_CHARS} are allowed")
    try:
        # Compiled and matched as UTF-8 bytes (RE2's own form, Unicode-aware all the same): the
        # wrapper's str path converts offsets in Python and costs ten times more per match.
        return re2.compile(pattern.encode("utf-8", "surrogatepass"), _RE2_OPTIONS)
    except re2.error as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise SchemaRefused(
            f"pattern {pattern!r} is not supported ({detail}): patterns run on RE2, a linear-time engine, "
            "so backreferences and lookaround are refused"
        ) from None


def _search(pattern: str, text: str) -> bool:
    regex = _compile(pattern)
    data = text.encode("utf-8", "surrogatepass")
    budget = _BUDGET.get()
    if budget is not None:
        budget.charge(1 + len(data) * int(regex.programsize) // REGEX_UNITS_PER_STEP)
    return regex.search(data) is not None


# -- the keywords that run regexes, re-implemented on RE2 (jsonschema's own call `re.search`) --------


def _pattern(validator: Any, patrn: str, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _search(patrn, instance):
        yield ValidationError(f"{instance!r} does not match {patrn!r}")


def _pattern_properties(
    validator: Any, patterns: Mapping[str, Any], instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for patrn, subschema in patterns.items():
        for key, value in instance.items():
            if _search(patrn, key):
                yield from validator.descend(value, subschema, path=key, schema_path=patrn)


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = [k for k in instance if k not in properties and not any(_search(p, k) for p in patterns)]
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        listed = ", ".join(repr(each) for each in sorted(extras))
        if patterns:
            verb = "does" if len(extras) == 1 else "do"
            yield ValidationError(
                f"{listed} {verb} not match any of the regexes: {', '.join(map(repr, sorted(patterns)))}"
            )
        else:
            verb = "was" if len(extras) == 1 else "were"
            yield ValidationError(f"Additional properties are not allowed ({listed} {verb} unexpected)")


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    # jsonschema falls back to comparing every pair (quadratic) for unsortable items; a canonical
    # form makes it linear. 1 and 1.0 are equal in JSON Schema, true and 1 are not (as jsonschema).
    if not unique or not validator.is_type(instance, "array"):
        return
    budget = _BUDGET.get()
    if budget is not None:
        budget.charge(len(instance))
    seen: set[str] = set()
    for item in instance:
        key = json.dumps(_normal(item), sort_keys=True)
        if key in seen:
            yield ValidationError(f"{instance!r} has non-unique elements")
            return
        seen.add(key)


def _normal(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value


_Keyword = Callable[[Any, Any, Any, Mapping[str, Any]], Iterator[ValidationError] | None]


def _metered(keyword: _Keyword, steps: int) -> _Keyword:
    """Every keyword evaluation costs a step and counts toward the nesting bound."""

    def evaluate(validator: Any, value: Any, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
        budget = _BUDGET.get()
        if budget is None:
            result = keyword(validator, value, instance, schema)
            if result is not None:
                yield from result
            return
        budget.charge(steps)
        if budget.nesting >= MAX_NESTING:
            raise ValidationBudgetExceeded(f"the schema nests more than {MAX_NESTING} levels at validation")
        budget.nesting += 1
        try:
            result = keyword(validator, value, instance, schema)
            if result is not None:
                yield from result
        finally:
            budget.nesting -= 1

    return evaluate


_OVERRIDES: dict[str, _Keyword] = {
    "pattern": _pattern,
    "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties,
    "uniqueItems": _unique_items,
}
# A reference builds a new validator each time it is followed: it costs several plain keywords.
_STEPS = {"$ref": 4, "$dynamicRef": 4}
_KEYWORDS = {
    name: _metered(_OVERRIDES.get(name) or fn, _STEPS.get(name, 1))
    for name, fn in Draft202012Validator.VALIDATORS.items()
}
ToolSchemaValidator: Any = extend(Draft202012Validator, validators=_KEYWORDS)  # type: ignore[no-untyped-call]
# No retrieval: a `$ref` outside the schema itself is unresolvable instead of fetched over HTTP.
_NO_REMOTE: referencing.Registry[Any] = referencing.Registry()

# The meta-schema checks `pattern` values and `patternProperties` keys with `format: regex`, which
# jsonschema's default checker compiles with Python `re`: this one compiles them with RE2 instead.
_META_FORMATS = FormatChecker(formats=())
_META_FORMATS.checks("regex", raises=SchemaRefused)(
    lambda instance: not isinstance(instance, str) or bool(_compile(instance))
)
_META_VALIDATOR = Draft202012Validator(Draft202012Validator.META_SCHEMA, format_checker=_META_FORMATS)


def check_tool_schema(schema: Any) -> None:
    """Raises SchemaRefused unless `schema` is a tool argument schema the platform will run."""
    if not isinstance(schema, dict):
        raise SchemaRefused("a tool's input schema must be a JSON object")
    if _depth(schema) > MAX_SCHEMA_DEPTH:
        raise SchemaRefused(
            f"input schema nests more than {MAX_SCHEMA_DEPTH} levels deep; at most {MAX_SCHEMA_DEPTH} are allowed"
        )
    size = len(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))
    if size > MAX_SCHEMA_BYTES:
        raise SchemaRefused(f"input schema is {size} bytes of JSON; at most {MAX_SCHEMA_BYTES} are allowed")
    _check_references(schema)
    error = best_match(_META_VALIDATOR.iter_errors(schema))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        if isinstance(error.cause, SchemaRefused):
            raise SchemaRefused(f"input schema at {where}: {error.cause}")
        raise SchemaRefused(f"input schema is not valid JSON Schema (2020-12) at {where}: {error.message}")


def _depth(value: Any) -> int:
    """Nesting levels of a JSON document, counted up to one past MAX_SCHEMA_DEPTH."""
    deepest, stack = 0, [(value, 1)]
    while stack:  # iterative: a deep document must not exhaust the interpreter's stack here
        node, level = stack.pop()
        deepest = max(deepest, level)
        if level > MAX_SCHEMA_DEPTH:
            break
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest


def _check_references(schema: dict[str, Any]) -> None:
    pattern_properties = unevaluated = False
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        for key in ("$ref", "$dynamicRef"):
            ref = node.get(key)
            if isinstance(ref, str) and not ref.startswith("#"):
                raise SchemaRefused(
                    f"{key} {ref!r} points outside the schema; only local references (#...) are allowed"
                )
        pattern_properties = pattern_properties or isinstance(node.get("patternProperties"), dict)
        unevaluated = unevaluated or "unevaluatedProperties" in node
        stack.extend(node.values())
    if pattern_properties and unevaluated:
        # jsonschema evaluates that combination with Python `re`, outside the keywords replaced here.
        raise SchemaRefused("unevaluatedProperties cannot be combined with patternProperties in a tool's input schema")


@lru_cache(maxsize=1024)
def tool_validator(schema_json: str) -> Validator | SchemaRefused:
    """The compiled validator of a canonical schema text, or why it is refused. Cached: every call
    of a tool version has the same schema text, and checking it costs far more than validating."""
    try:
        schema = orjson.loads(schema_json)
        check_tool_schema(schema)
    except SchemaRefused as exc:
        return exc
    except (orjson.JSONDecodeError, RecursionError):
        return SchemaRefused("input schema is not JSON this platform can read")
    validator: Validator = ToolSchemaValidator(schema, registry=_NO_REMOTE)
    return validator


def argument_error(validator: Any, arguments_json: str, tool: str) -> str | None:
    """None when `arguments_json` is valid for `validator`, else why not, fit for the model to read.
    Every bound above holds: a call past one is invalid, whatever its schema."""
    if len(arguments_json) > MAX_ARGUMENT_BYTES:
        return f"arguments for {tool!r} are {len(arguments_json)} bytes; at most {MAX_ARGUMENT_BYTES} are allowed"
    try:
        arguments = orjson.loads(arguments_json or "{}")
    except orjson.JSONDecodeError as exc:
        return f"arguments for {tool!r} are not valid JSON ({exc}); send a JSON object"
    if not isinstance(arguments, dict):
        return f"arguments for {tool!r} must be a JSON object"
    # Nesting needs one bracket a level: most calls are ruled out without walking them.
    brackets = arguments_json.count("{") + arguments_json.count("[")
    if brackets > MAX_ARGUMENT_DEPTH and _depth_over(arguments, MAX_ARGUMENT_DEPTH):
        return f"arguments for {tool!r} nest more than {MAX_ARGUMENT_DEPTH} levels deep"
    token = _BUDGET.set(_Budget(VALIDATION_STEPS))
    try:
        errors = sorted(validator.iter_errors(arguments), key=lambda e: list(map(str, e.path)))
    except ValidationBudgetExceeded as exc:
        return f"arguments for {tool!r} could not be validated within the platform's bound ({exc})"
    except RecursionError:
        return f"arguments for {tool!r} could not be validated: the schema recurses too deeply"
    except Exception as exc:  # an unresolvable local $ref, or anything else a schema can cause
        return f"arguments for {tool!r} could not be validated ({type(exc).__name__})"
    finally:
        _BUDGET.reset(token)
    if errors:
        where = "/".join(str(p) for p in errors[0].path) or "(root)"
        return f"invalid arguments for {tool!r} at {where}: {errors[0].message}"
    return None


def _depth_over(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        node, level = stack.pop()
        if level > limit:
            return True
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return False


class _BoundedOutputValidator:
    """What the MCP client validates a tool's structured result with (`iter_errors` only): the
    server's declared output schema, checked and run like an input schema. A schema the platform
    will not run, or a validation past the bounds, fails the result rather than the executor."""

    def __init__(self, output_schema: Any) -> None:
        try:
            text = orjson.dumps(output_schema, option=orjson.OPT_SORT_KEYS).decode()
        except orjson.JSONEncodeError:
            text = ""
        self._validator = tool_validator(text)

    def iter_errors(self, instance: Any) -> Iterator[ValidationError]:
        if isinstance(self._validator, SchemaRefused):
            yield ValidationError(f"the tool's output schema is refused: {self._validator}")
            return
        try:
            text = orjson.dumps(instance).decode()
        except orjson.JSONEncodeError:
            yield ValidationError("the structured result is not JSON")
            return
        error = argument_error(self._validator, text, "output")
        if error is not None:
            where = error.replace("invalid arguments for 'output'", "invalid structured result", 1)
            yield ValidationError(where.replace("arguments for 'output'", "the structured result", 1))


def guard_output_schemas(session: Any) -> None:
    """Makes an MCP `ClientSession` validate tool results as above instead of with jsonschema's
    defaults (Python `re`, unbounded): a tool server's `outputSchema` is as hostile as a tenant's
    input schema, and the client checks every structured result against it inside the executor."""
    session._output_schema_validator = lambda _name, output_schema: _BoundedOutputValidator(output_schema)
