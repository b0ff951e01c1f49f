"""The condition language of branch edges: parsed by hand into a small tree, evaluated over the
run's state values. Never `eval`: there is no attribute access, indexing, call (but `len`),
import or name other than the workflow's declared state fields, so a definition cannot reach
anything but its own state.

    expr    := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | compare
    compare := sum (("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not in") sum)?
    sum     := atom (("+" | "-") atom)*
    atom    := NUMBER | STRING | "true" | "false" | "null" | NAME | "len" "(" expr ")" | "(" expr ")" | "-" atom

Bounded: at most MAX_CHARS characters, MAX_TOKENS tokens and MAX_DEPTH nesting, checked before
any recursion can go deep, so hostile input is refused, never a RecursionError or a long parse.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

MAX_CHARS = 1000
MAX_TOKENS = 200
MAX_DEPTH = 20

_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d{1,15}(?:\.\d{1,15})?)|(?P<str>'[^'\\]{0,200}'|\"[^\"\\]{0,200}\")"
    r"|(?P<op>==|!=|<=|>=|<|>|\+|-|\(|\))|(?P<name>[A-Za-z_][A-Za-z0-9_]{0,63}))"
)
_KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false", "null", "len"})
_COMPARE = frozenset({"==", "!=", "<", "<=", ">", ">=", "in", "not in"})

# A parsed expression: ("lit", value) | ("var", name) | ("len", e) | ("neg", e) | ("not", e)
# | (op, left, right) for and/or/compare/+/-.
Node = tuple[Any, ...]


class ExpressionError(ValueError):
    """A condition that cannot be parsed, or evaluated over the values it met."""


def _tokens(text: str) -> list[tuple[str, str]]:
    if len(text) > MAX_CHARS:
        raise ExpressionError(f"condition is {len(text)} characters; at most {MAX_CHARS}")
    out: list[tuple[str, str]] = []
    pos, end = 0, len(text.rstrip())
    while pos < end:
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ExpressionError(f"unexpected {text[pos:].lstrip()[:1]!r} at {pos} (allowed: names, numbers, "
                                  "quoted strings, == != < <= > >= + - ( ), and or not in, len())")  # fmt: skip
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        if len(out) > MAX_TOKENS:
            raise ExpressionError(f"condition has more than {MAX_TOKENS} tokens")
        pos = m.end()
    depth = 0
    for _kind, value in out:  # nesting checked before the recursive parse
        depth += (value == "(") - (value == ")")
        if depth > MAX_DEPTH:
            raise ExpressionError(f"condition nests deeper than {MAX_DEPTH} parentheses")
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.depth = 0

    def peek(self) -> str:
        return self.tokens[self.pos][1] if self.pos < len(self.tokens) else ""

    def take(self) -> tuple[str, str]:
        if self.pos >= len(self.tokens):
            raise ExpressionError("condition ends too early")
        self.pos += 1
        return self.tokens[self.pos - 1]

    def expect(self, value: str) -> None:
        if self.take()[1] != value:
            raise ExpressionError(f"expected {value!r} at token {self.pos}")

    def nested(self) -> None:
        # `not not not ...` and `- - - ...` nest without parentheses: counted here too.
        self.depth += 1
        if self.depth > MAX_DEPTH * 2:
            raise ExpressionError(f"condition nests deeper than {MAX_DEPTH * 2} operators")

    def parse(self) -> Node:
        node = self.or_()
        if self.pos != len(self.tokens):
            raise ExpressionError(f"unexpected {self.peek()!r} after a complete condition")
        return node

    def or_(self) -> Node:
        return self._chain("or", self.and_)

    def and_(self) -> Node:
        return self._chain("and", self.not_)

    def _chain(self, word: str, operand: Callable[[], Node]) -> Node:
        node = operand()
        while self.peek() == word:
            self.take()
            node = (word, node, operand())
        return node

    def not_(self) -> Node:
        if self.peek() == "not":
            self.take()
            self.nested()
            return ("not", self.not_())
        return self.compare()

    def compare(self) -> Node:
        left = self.sum()
        op = self.peek()
        if op == "not" and self.pos + 1 < len(self.tokens) and self.tokens[self.pos + 1][1] == "in":
            self.take()
            op = "not in"
        if op in _COMPARE:
            self.take()
            return (op, left, self.sum())
        return left

    def sum(self) -> Node:
        node = self.atom()
        while self.peek() in ("+", "-"):
            op = self.take()[1]
            node = (op, node, self.atom())
        return node

    def atom(self) -> Node:
        kind, value = self.take()
        if kind == "num":
            return ("lit", float(value) if "." in value else int(value))
        if kind == "str":
            return ("lit", value[1:-1])
        if value == "(":
            self.nested()
            node = self.or_()
            self.expect(")")
            return node
        if value == "-":
            self.nested()
            return ("neg", self.atom())
        if value in ("true", "false", "null"):
            return ("lit", {"true": True, "false": False, "null": None}[value])
        if value == "len":
            self.expect("(")
            self.nested()
            node = self.or_()
            self.expect(")")
            return ("len", node)
        if kind == "name" and value not in _KEYWORDS:
            return ("var", value)
        raise ExpressionError(f"unexpected {value!r} at token {self.pos}")


@functools.lru_cache(maxsize=1024)
def parse(text: str) -> Node:
    """The condition's tree (cached: a run evaluates the same few conditions over and over)."""
    tokens = _tokens(text)
    if not tokens:
        raise ExpressionError("empty condition")
    return _Parser(tokens).parse()


def names(node: Node) -> set[str]:
    """The state fields a condition reads (checked against the declared ones at registration)."""
    if node[0] == "var":
        return {node[1]}
    if node[0] == "lit":
        return set()
    return set().union(*(names(child) for child in node[1:]))


def evaluate(node: Node, values: Mapping[str, Any]) -> Any:
    op = node[0]
    if op == "lit":
        return node[1]
    if op == "var":
        return values.get(node[1])
    if op == "not":
        return not _truth(evaluate(node[1], values))
    if op == "and":
        return _truth(evaluate(node[1], values)) and _truth(evaluate(node[2], values))
    if op == "or":
        return _truth(evaluate(node[1], values)) or _truth(evaluate(node[2], values))
    if op == "neg":
        return -_number(evaluate(node[1], values))
    if op == "len":
        value = evaluate(node[1], values)
        if not isinstance(value, (str, list, dict)):
            raise ExpressionError(f"len() of {type(value).__name__}")
        return len(value)
    left, right = evaluate(node[1], values), evaluate(node[2], values)
    try:
        match op:
            case "==":
                return left == right
            case "!=":
                return left != right
            case "in":
                return left in right
            case "not in":
                return left not in right
            case "<":
                return left < right
            case "<=":
                return left <= right
            case ">":
                return left > right
            case ">=":
                return left >= right
            case "+" if isinstance(left, str) and isinstance(right, str):
                return left + right
            case "+":
                return _number(left) + _number(right)
            case "-":
                return _number(left) - _number(right)
    except TypeError as exc:
        raise ExpressionError(f"{op} of {type(left).__name__} and {type(right).__name__}") from exc
    raise ExpressionError(f"unknown operator {op!r}")


def check(text: str, values: Mapping[str, Any]) -> bool:
    """The condition's truth over `values`: parse errors and type errors raise ExpressionError."""
    return _truth(evaluate(parse(text), values))


def _truth(value: Any) -> bool:
    return bool(value)


def _number(value: Any) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ExpressionError(f"arithmetic on {type(value).__name__}")
    return value
