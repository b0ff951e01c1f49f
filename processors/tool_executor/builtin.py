"""Built-in demo tools: a safe calculator, a static lookup, a side-effecting demo bank and a sleep.

`transfer_funds` stands for an external payment system. Its SQLite file is that system's own
durable state, not ours: it dedupes on the idempotency key exactly as a payment API dedupes on
an `Idempotency-Key` header, which is what makes re-driving a call after a crash safe.
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import hashlib
import math
import operator
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from agentstream.llm import ToolSpec
from agentstream.tooling import RiskTier, ToolDescriptor, ToolResult

MAX_EXPRESSION_CHARS = 1_000
# Bounds `**` so a single expression cannot pin a CPU or exhaust memory building a huge integer.
MAX_RESULT_BITS = 10_000
MAX_SLEEP_MS = 10_000
MAX_PAD_CHARS = 200_000  # sleep_ms's filler: a result as large as a big page, for the fan-out bench
MAX_AMOUNT_CENTS = 100_000_000

LOOKUP_CORPUS: dict[str, str] = {
    "kafka": "Apache Kafka is a distributed, partitioned, replicated commit log used as an event-streaming "
    "platform. Producers append records to topic partitions; consumer groups read them in offset order.",
    "kraft": "KRaft is Kafka's built-in Raft-based metadata quorum. It replaced ZooKeeper; Kafka 4.x runs "
    "only in KRaft mode, with controllers storing cluster metadata in an internal log.",
    "avro": "Apache Avro is a compact binary serialization format with schemas written in JSON. Readers "
    "resolve the writer's schema against their own, which permits compatible schema evolution.",
    "mcp": "The Model Context Protocol (MCP) is an open JSON-RPC protocol through which AI applications "
    "discover and call tools, read resources and fetch prompts from servers over stdio or HTTP.",
    "idempotency key": "An idempotency key identifies one logical operation across retries: a server that "
    "sees the same key twice applies the effect once and returns the original response.",
    "exactly-once": "Kafka's exactly-once semantics combine idempotent producers with transactions so that "
    "a read-process-write cycle commits its output and its input offsets atomically.",
}

_BINARY_OPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY_OPS: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}


class _BadInput(Exception):
    """An argument or expression the tool refuses; its message is what the model sees."""


# --- calculator -------------------------------------------------------------------------------


def evaluate_expression(expression: str) -> int | float:
    """Evaluates arithmetic by walking the AST: only numeric literals and arithmetic operators are
    ever executed, so nothing in the expression can name, import or call anything."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise _BadInput(f"expression is longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise _BadInput(f"invalid expression: {exc.msg}") from None
    try:
        value = _eval_node(tree.body)
    except ZeroDivisionError:
        raise _BadInput("division by zero") from None
    except OverflowError:
        raise _BadInput("result is too large") from None
    except RecursionError:
        raise _BadInput("expression is nested too deeply") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise _BadInput("result is not a finite number")
    return value


def _eval_node(node: ast.expr) -> int | float:
    result: Any
    if isinstance(node, ast.Constant):
        # bool is an int subclass and complex is numeric; neither is arithmetic input here.
        if type(node.value) not in (int, float):
            raise _BadInput(f"unsupported literal {node.value!r}")
        result = node.value
    elif isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY_OPS:
        result = _UNARY_OPS[type(node.op)](_eval_node(node.operand))
    elif isinstance(node, ast.BinOp) and type(node.op) in _BINARY_OPS:
        left, right = _eval_node(node.left), _eval_node(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        result = _BINARY_OPS[type(node.op)](left, right)
    else:
        raise _BadInput(f"unsupported syntax: {type(node).__name__}; only numbers, + - * / // % ** and ( ) are allowed")
    if isinstance(result, complex):  # (-8) ** 0.5
        raise _BadInput("result is not a real number")
    if isinstance(result, int) and result.bit_length() > MAX_RESULT_BITS:
        raise _BadInput("result is too large")
    number: int | float = result
    return number


def _check_power(base: int | float, exponent: int | float) -> None:
    # Only int ** int can grow without bound (float powers raise OverflowError). |base| has at
    # least bit_length - 1 bits of magnitude, so this never lets a result past 2 * MAX_RESULT_BITS
    # be computed, and it leaves 0, 1 and -1 to any power alone.
    if isinstance(base, int) and isinstance(exponent, int) and (base.bit_length() - 1) * exponent > MAX_RESULT_BITS:
        raise _BadInput("exponent is too large")


def format_number(value: int | float) -> str:
    # 12500 / 4 reads better as "3125" than "3125.0"; repr keeps other floats round-trippable.
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


# --- demo bank --------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS transfers (
    idempotency_key TEXT PRIMARY KEY,
    transfer_id TEXT NOT NULL,
    to_account TEXT NOT NULL,
    amount_cents INTEGER NOT NULL,
    memo TEXT NOT NULL,
    confirmation TEXT NOT NULL,
    applied_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL,
    attempted_at REAL NOT NULL,
    deduplicated INTEGER NOT NULL
);
"""


def _connect(bank_path: Path) -> sqlite3.Connection:
    bank_path.parent.mkdir(parents=True, exist_ok=True)
    # Autocommit mode so that BEGIN/COMMIT below are ours and not the sqlite3 module's guesses.
    conn = sqlite3.connect(bank_path, timeout=30.0, isolation_level=None)
    _enable_wal(conn)
    # FULL: a confirmation we returned must survive the host crashing right after (that is the
    # exact window the benchmark kills processes in).
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(_SCHEMA)
    return conn


def _enable_wal(conn: sqlite3.Connection, deadline_s: float = 30.0) -> None:
    # Switching a new file to WAL needs it to itself, and SQLite answers "database is locked" at
    # once rather than through the busy timeout when another connection is opening it too: the
    # hosts that share a bank race exactly there on its first use.
    deadline = time.monotonic() + deadline_s
    delay = 0.001
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def transfer_id_for(idempotency_key: str) -> str:
    return "txn_" + hashlib.sha256(f"transfer:{idempotency_key}".encode()).hexdigest()[:20]


def _apply_transfer(bank_path: Path, key: str, to_account: str, amount_cents: int, memo: str) -> ToolResult:
    conn = _connect(bank_path)
    try:
        # IMMEDIATE takes the write lock before the read, so two hosts racing on one key serialize
        # here and the second one sees the first one's row.
        conn.execute("BEGIN IMMEDIATE")
        try:
            now = time.time()
            row = conn.execute(
                "SELECT to_account, amount_cents, memo, confirmation FROM transfers WHERE idempotency_key = ?",
                (key,),
            ).fetchone()
            if row is None:
                confirmation = (
                    f"Transfer {transfer_id_for(key)} confirmed: {amount_cents} cents to account "
                    f"{to_account} (memo: {memo!r})."
                )
                conn.execute(
                    "INSERT INTO transfers (idempotency_key, transfer_id, to_account, amount_cents, memo,"
                    " confirmation, applied_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (key, transfer_id_for(key), to_account, amount_cents, memo, confirmation, now),
                )
                result = ToolResult(confirmation)
            elif tuple(row[:3]) != (to_account, amount_cents, memo):
                # What payment APIs do too: a reused key with other parameters is a caller bug,
                # and answering with the old confirmation would hide it.
                result = ToolResult(
                    "idempotency key was already used for a different transfer; nothing was applied",
                    is_error=True,
                )
            else:
                result = ToolResult(str(row[3]))
            conn.execute(
                "INSERT INTO attempts (idempotency_key, attempted_at, deduplicated) VALUES (?, ?, ?)",
                (key, now, int(row is not None)),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result
    finally:
        conn.close()


def bank_stats(bank_path: Path) -> dict[str, int]:
    """Counts for benchmarks: attempts == applied + deduplicated when every attempt was recorded."""
    conn = _connect(bank_path)
    try:
        applied = conn.execute("SELECT COUNT(*) FROM transfers").fetchone()[0]
        attempts, deduplicated = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(deduplicated), 0) FROM attempts"
        ).fetchone()
        # The primary key makes this 0; it is counted from the rows so a benchmark checks, not trusts.
        repeated = conn.execute(
            "SELECT COUNT(*) FROM (SELECT idempotency_key FROM transfers GROUP BY idempotency_key HAVING COUNT(*) > 1)"
        ).fetchone()[0]
        return {
            "applied": int(applied),
            "attempts": int(attempts),
            "deduplicated": int(deduplicated),
            "keys_applied_more_than_once": int(repeated),
        }
    finally:
        conn.close()


def bank_transfers(bank_path: Path) -> list[dict[str, Any]]:
    conn = _connect(bank_path)
    try:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            "SELECT idempotency_key, transfer_id, to_account, amount_cents, memo, confirmation, applied_at"
            " FROM transfers ORDER BY applied_at, rowid"
        ).fetchall()
        return [dict(row) for row in rows]
    finally:
        conn.close()


# --- argument checks --------------------------------------------------------------------------


def _expect_keys(arguments: dict[str, Any], required: set[str]) -> None:
    missing = sorted(required - arguments.keys())
    if missing:
        raise _BadInput(f"missing required argument(s): {', '.join(missing)}")
    extra = sorted(arguments.keys() - required)
    if extra:
        raise _BadInput(f"unexpected argument(s): {', '.join(extra)}")


def _str_arg(arguments: dict[str, Any], name: str, *, min_len: int = 0, max_len: int = 1_000) -> str:
    value = arguments[name]
    if not isinstance(value, str):
        raise _BadInput(f"{name} must be a string, got {type(value).__name__}")
    if not min_len <= len(value) <= max_len:
        raise _BadInput(f"{name} must be {min_len}..{max_len} characters long")
    return value


def _int_arg(arguments: dict[str, Any], name: str, lo: int, hi: int) -> int:
    value = arguments[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise _BadInput(f"{name} must be an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise _BadInput(f"{name} must be between {lo} and {hi}")
    return value


def _optional(descriptor: ToolDescriptor, name: str) -> ToolDescriptor:
    """`descriptor` with its argument `name` no longer required."""
    spec = descriptor.spec
    schema = {**spec.input_schema, "required": [r for r in spec.input_schema["required"] if r != name]}
    return dataclasses.replace(descriptor, spec=ToolSpec(spec.name, spec.description, schema))


def _descriptor(
    name: str, description: str, properties: dict[str, Any], *, timeout_s: float, risk: RiskTier = "read_only"
) -> ToolDescriptor:
    schema = {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}
    # Every built-in is idempotent: the read-only ones trivially, transfer_funds by its key.
    return ToolDescriptor(ToolSpec(name, description, schema), "builtin", risk, idempotent=True, timeout_s=timeout_s)


# --- the host ---------------------------------------------------------------------------------

_Handler = Callable[[dict[str, Any], str], Awaitable[ToolResult]]


class BuiltinToolHost:
    """Runs the built-in tools in-process. `call` never raises except for cancellation."""

    def __init__(self, bank_path: Path) -> None:
        self.bank_path = Path(bank_path)
        self._handlers: dict[str, _Handler] = {
            "calculator": self._calculator,
            "lookup": self._lookup,
            "transfer_funds": self._transfer_funds,
            "sleep_ms": self._sleep_ms,
        }
        self._descriptors = [
            _descriptor(
                "calculator",
                "Evaluate an arithmetic expression with + - * / // % ** and parentheses over integers and "
                "decimals, e.g. '(4200 + 3800) / 4'. Returns the number.",
                {"expression": {"type": "string", "minLength": 1, "maxLength": MAX_EXPRESSION_CHARS}},
                timeout_s=5.0,
            ),
            _descriptor(
                "lookup",
                f"Look up a short reference note. Known topics: {', '.join(sorted(LOOKUP_CORPUS))}.",
                {"topic": {"type": "string", "minLength": 1, "maxLength": 200}},
                timeout_s=5.0,
            ),
            _descriptor(
                "transfer_funds",
                "Transfer money to an account. Irreversible: each call moves real (demo) money. "
                "Returns a confirmation with the transfer id.",
                {
                    "to_account": {"type": "string", "minLength": 1, "maxLength": 64},
                    "amount_cents": {"type": "integer", "minimum": 1, "maximum": MAX_AMOUNT_CENTS},
                    "memo": {"type": "string", "maxLength": 200},
                },
                timeout_s=30.0,
                risk="irreversible",
            ),
            _optional(
                _descriptor(
                    "sleep_ms",
                    "Wait for the given number of milliseconds, then answer (with `pad` filler characters, "
                    "to stand in for a large result).",
                    {
                        "ms": {"type": "integer", "minimum": 0, "maximum": MAX_SLEEP_MS},
                        "pad": {"type": "integer", "minimum": 0, "maximum": MAX_PAD_CHARS},
                    },
                    timeout_s=15.0,
                ),
                "pad",
            ),
        ]

    def descriptors(self) -> list[ToolDescriptor]:
        return list(self._descriptors)

    async def call(self, name: str, arguments: dict[str, Any], *, idempotency_key: str, timeout_s: float) -> ToolResult:
        handler = self._handlers.get(name)
        if handler is None:
            return ToolResult(
                f"unknown tool {name!r}; this host has {', '.join(sorted(self._handlers))}", is_error=True
            )
        if not isinstance(arguments, dict):
            return ToolResult(f"{name}: arguments must be an object", is_error=True)
        try:
            async with asyncio.timeout(timeout_s):
                return await handler(arguments, idempotency_key)
        except _BadInput as exc:
            return ToolResult(f"{name}: {exc}", is_error=True)
        except TimeoutError:
            note = (
                "; the transfer may or may not have been applied: retry with the same idempotency key to learn which"
                if name == "transfer_funds"
                else ""
            )
            return ToolResult(f"{name} timed out after {timeout_s:g}s{note}", is_error=True)
        except Exception as exc:  # a tool bug must become an observation, not crash the executor
            return ToolResult(f"{name} failed: {type(exc).__name__}: {exc}", is_error=True)

    async def aclose(self) -> None:
        return None

    async def _calculator(self, arguments: dict[str, Any], _key: str) -> ToolResult:
        _expect_keys(arguments, {"expression"})
        expression = _str_arg(arguments, "expression", min_len=1, max_len=MAX_EXPRESSION_CHARS)
        return ToolResult(format_number(evaluate_expression(expression)))

    async def _lookup(self, arguments: dict[str, Any], _key: str) -> ToolResult:
        _expect_keys(arguments, {"topic"})
        topic = _str_arg(arguments, "topic", min_len=1, max_len=200).strip().lower()
        note = LOOKUP_CORPUS.get(topic)
        if note is None:
            raise _BadInput(f"no note on {topic!r}; known topics: {', '.join(sorted(LOOKUP_CORPUS))}")
        return ToolResult(note)

    async def _transfer_funds(self, arguments: dict[str, Any], key: str) -> ToolResult:
        _expect_keys(arguments, {"to_account", "amount_cents", "memo"})
        to_account = _str_arg(arguments, "to_account", min_len=1, max_len=64)
        amount_cents = _int_arg(arguments, "amount_cents", 1, MAX_AMOUNT_CENTS)
        memo = _str_arg(arguments, "memo", max_len=200)
        if not isinstance(key, str) or not key:
            raise _BadInput("an idempotency key is required for transfers")
        return await asyncio.to_thread(_apply_transfer, self.bank_path, key, to_account, amount_cents, memo)

    async def _sleep_ms(self, arguments: dict[str, Any], _key: str) -> ToolResult:
        _expect_keys({k: v for k, v in arguments.items() if k != "pad"}, {"ms"})
        ms = _int_arg(arguments, "ms", 0, MAX_SLEEP_MS)
        pad = _int_arg(arguments, "pad", 0, MAX_PAD_CHARS) if "pad" in arguments else 0
        await asyncio.sleep(ms / 1000.0)
        return ToolResult(f"slept {ms} ms" + ("\n" + "." * pad if pad else ""))
