"""`run_code`: runs one round of a code-mode program in the sandbox (no network, hidden files, CPU,
memory and output limits) and answers what the program wants next: a tool call, or its output.

The executor never runs a tool on the program's behalf: a round stops at the first call without a
recorded result, and the orchestrator requests that call as an ordinary, gated, journaled tool call
(processors/orchestrator/codemode.py). So this tool is read-only and idempotent: the same round
(program plus recorded results) gives the same answer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from agentstream.codemode import sandbox_runner
from agentstream.codemode.interface import (
    ALLOWED_MODULES,
    CPU_SECONDS,
    MAX_CALLS,
    MAX_CODE_CHARS,
    MAX_OUTPUT_CHARS,
    MEMORY_MB,
    RUN_CODE_TOOL,
    WALL_SECONDS,
)
from agentstream.llm import ToolSpec
from agentstream.sandbox import (
    SandboxPolicy,
    SandboxUnavailable,
    make_sandbox_dir,
    sandboxed_argv,
    scrubbed_environment,
)
from agentstream.tooling import ToolDescriptor, ToolResult

# What the runner may write back: the output, a call's arguments and the JSON around them.
MAX_ANSWER_BYTES = 4 * (MAX_OUTPUT_CHARS + 64_000) + 4096
_SIGXCPU_EXIT = 128 + 24
_SIGKILL_EXIT = 128 + 9
log = logging.getLogger(__name__)


def descriptor() -> ToolDescriptor:
    schema = {
        "type": "object",
        "properties": {
            "code": {"type": "string", "minLength": 1, "maxLength": MAX_CODE_CHARS,
                     "description": "A Python 3 program calling the tools as the functions the system prompt lists."},
            # A round's replay state, set by the platform: a model's call carrying them is refused.
            "calls": {"type": "array", "maxItems": MAX_CALLS, "description": "Set by the platform; leave out."},
            "functions": {"type": "array", "description": "Set by the platform; leave out."},
        },
        "required": ["code"],
        "additionalProperties": False,
    }  # fmt: skip
    description = (
        "Run a Python program that calls your other tools as functions (code mode: many calls in one "
        "step); its printed output is the result. The system prompt lists the functions and limits."
    )
    return ToolDescriptor(ToolSpec(RUN_CODE_TOOL, description, schema), "builtin", "read_only",
                          idempotent=True, timeout_s=WALL_SECONDS + 5.0)  # fmt: skip


@cache
def runner_source() -> str:
    return Path(sandbox_runner.__file__).read_text()


def _answer(status: str, error: str = "", output: str = "") -> ToolResult:
    body = {"status": status, "error": error, "output": output}
    return ToolResult(orjson.dumps(body).decode(), is_error=status == "error")


class CodeTool:
    """Runs rounds, one sandboxed interpreter each. `call` never raises except for cancellation:
    every failure is an error answer the orchestrator turns into the model's observation."""

    def __init__(
        self,
        *,
        hidden_paths: Sequence[str | os.PathLike[str]] = (),
        wall_s: float = WALL_SECONDS,
        cpu_seconds: int = CPU_SECONDS,
        allowed_modules: Sequence[str] = ALLOWED_MODULES,
    ) -> None:
        self.allowed_modules = list(allowed_modules)
        self.policy = SandboxPolicy(
            cpu_seconds=cpu_seconds,
            memory_mb=MEMORY_MB,
            wall_clock_s=wall_s,
            hidden_paths=tuple(os.path.abspath(p) for p in hidden_paths),
            max_file_mb=1,
            scratch_mb=4,
        )
        self.wall_s = wall_s

    async def call(self, arguments: dict[str, Any], *, timeout_s: float) -> ToolResult:
        code, calls, functions = arguments.get("code"), arguments.get("calls", []), arguments.get("functions", [])
        if not isinstance(code, str) or not isinstance(calls, list) or not isinstance(functions, list):
            return _answer("error", "run_code takes code (a string), calls and functions (lists)")
        request = {
            "code": code, "calls": calls, "functions": functions, "allowed": self.allowed_modules,
            "max_calls": MAX_CALLS, "max_output": MAX_OUTPUT_CHARS,
        }  # fmt: skip
        try:
            return await self._run(orjson.dumps(request), min(timeout_s, self.wall_s))
        except SandboxUnavailable as exc:
            log.error("run_code refused: %s", exc)
            return _answer("error", "the sandbox is unavailable on this executor; programs never run without it")
        except Exception as exc:  # a broken runner is an observation, not a crashed executor
            log.exception("run_code failed")
            return _answer("error", f"the program could not be run ({type(exc).__name__})")

    async def _run(self, request: bytes, wall_s: float) -> ToolResult:
        sandbox_dir = await asyncio.to_thread(make_sandbox_dir)
        try:
            home = os.path.join(sandbox_dir, "home")
            os.mkdir(home)
            # Not -I: that also ignores PYTHONHASHSEED, and set iteration must be the same in every
            # round. -s -S: no site-packages; -P: nothing importable from the working directory.
            args = ["-s", "-S", "-P", "-c", runner_source()]
            argv = await asyncio.to_thread(sandboxed_argv, sys.executable, args, self.policy, None, visible=[home])
            env = scrubbed_environment({"PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}, home=home)
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env,
            )  # fmt: skip
            try:
                async with asyncio.timeout(wall_s):
                    out, err = await proc.communicate(request)
            except TimeoutError:
                return _answer("error", f"the program ran longer than {wall_s:g}s (wall clock) and was stopped")
            finally:
                if proc.returncode is None:
                    proc.kill()  # the bootstrap's death takes its pid namespace, the program, with it
                    await proc.wait()
            return _interpret(proc.returncode or 0, out, err, self.policy.cpu_seconds)
        finally:
            await asyncio.to_thread(shutil.rmtree, sandbox_dir, True)


def _interpret(returncode: int, out: bytes, err: bytes, cpu_seconds: int) -> ToolResult:
    if returncode in (_SIGXCPU_EXIT, _SIGKILL_EXIT):
        return _answer(
            "error", f"the program used more than {cpu_seconds}s of CPU time and was stopped (an endless loop?)"
        )
    if returncode != 0 or not out:
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        if "MemoryError" in tail[0]:
            return _answer("error", f"the program ran out of memory ({MEMORY_MB} MB)")
        return _answer("error", f"the program's interpreter failed (exit {returncode}): {tail[0][:300]}")
    if len(out) > MAX_ANSWER_BYTES:
        return _answer("error", "the program's answer is larger than a round may return")
    try:
        answer = orjson.loads(out)
    except orjson.JSONDecodeError:
        return _answer("error", "the program's answer was not readable")
    if not isinstance(answer, dict) or answer.get("status") not in ("call", "done", "error"):
        return _answer("error", "the program's answer was not readable")
    return ToolResult(out.decode(), is_error=answer["status"] == "error")
