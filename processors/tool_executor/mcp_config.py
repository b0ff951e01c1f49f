"""What an MCP server is (`McpServerConfig`) and how a process we start for one is launched: its
command resolved on its own PATH, the environment it gets (ours never leaks beyond a few names),
and, for a sandboxed server, the bootstrap that confines it. Used by `mcp_host.McpToolHost`."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field

from mcp.client.stdio import StdioServerParameters, get_default_environment

from agentstream.sandbox import SandboxPolicy, sandboxed_argv, scrubbed_environment
from agentstream.settings.environ import inherited
from agentstream.tooling import RiskTier

__all__ = [
    "INHERITED_ENV",
    "McpServerConfig",
    "sandboxed_server_parameters",
    "server_environment",
    "server_parameters",
    "time_server_config",
]

# The only variables of ours a server inherits; everything else it needs comes from its config.
INHERITED_ENV = ("PATH", "HOME", "LANG")


@dataclass(frozen=True, slots=True)
class McpServerConfig:
    name: str
    command: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    risk: RiskTier = "read_only"
    # True when the server's tools dedupe on the idempotency key we send in `_meta`.
    idempotent: bool = True
    # Per-call cap; the descriptors advertise it as each tool's timeout.
    timeout_s: float = 30.0
    start_timeout_s: float = 30.0
    # Runs the server in a sandbox (namespaces, rlimits, scrubbed env, allowlisted egress) when set.
    sandbox: SandboxPolicy | None = None
    # A streamable-HTTP endpoint: when set, no process is started (`command`, `args`, `env` and
    # `sandbox` do not apply; the caller decides whether the URL may be reached at all).
    url: str = ""


def time_server_config() -> McpServerConfig:
    """The reference mcp-server-time, run by this interpreter so it comes from our own venv."""
    return McpServerConfig(
        name="time",
        command=sys.executable,
        args=["-m", "mcp_server_time", "--local-timezone", "UTC"],
        risk="read_only",
        idempotent=True,
        timeout_s=10.0,
    )


def server_environment(config: McpServerConfig) -> dict[str, str]:
    env = inherited(INHERITED_ENV)
    # Without a UTF-8 locale a Python server would coerce one and read stdio in a guessed encoding.
    env.setdefault("LANG", "C.UTF-8")
    return env | config.env


def server_parameters(config: McpServerConfig) -> StdioServerParameters:
    if config.sandbox is not None:
        # Fail closed: these parameters would run the server outside its sandbox.
        raise ValueError(f"MCP server {config.name!r} is sandboxed; use sandboxed_server_parameters")
    env = server_environment(config)
    return _stdio_parameters(_resolve(config.command, env), list(config.args), env)


def sandboxed_server_parameters(config: McpServerConfig, *, proxy_socket: str, home: str) -> StdioServerParameters:
    """Like server_parameters, for a config with a sandbox: the server runs under
    agentstream.sandbox's bootstrap, with only PATH, a private HOME, LANG and its own env."""
    assert config.sandbox is not None
    env = scrubbed_environment(config.env, home=home)
    command = _resolve(config.command, env)
    # The private HOME stays reachable even though every sandbox's directory is hidden from the tool.
    argv = sandboxed_argv(command, list(config.args), config.sandbox, proxy_socket, visible=[home])
    return _stdio_parameters(argv[0], argv[1:], env)


def _resolve(command: str, env: dict[str, str]) -> str:
    # Resolved here because behind `env` a missing command is only an exit status 127.
    resolved = shutil.which(command, path=env.get("PATH"))
    if resolved is None:
        raise FileNotFoundError(f"command {command!r} not found on PATH")
    return resolved


def _stdio_parameters(command: str, args: list[str], env: dict[str, str]) -> StdioServerParameters:
    # stdio_client always merges the SDK's own inherited set (LOGNAME, SHELL, TERM, USER, ...)
    # under ours; `env -u` strips what we did not choose. Only names go on the command line,
    # never values, so nothing secret shows in `ps`.
    unwanted = sorted(set(get_default_environment()) - env.keys())
    env_tool = shutil.which("env")
    if not unwanted or env_tool is None:
        return StdioServerParameters(command=command, args=args, env=env)
    unset = [arg for key in unwanted for arg in ("-u", key)]
    return StdioServerParameters(command=env_tool, args=[*unset, "--", command, *args], env=env)
