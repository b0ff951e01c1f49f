"""The first process inside a sandbox's namespaces: it finishes the sandbox, then runs the tool.

    python -I -S -c <launcher.BOOTSTRAP_STUB> [--proxy-socket PATH] [--no-netns] [--hide PATH]...
        [--keep PATH]... --cpu-seconds N --memory-mb M --nproc P --nofile F --fsize-mb S
        --scratch-mb T --tool-uid U --tool-gid G -- command args...

It enters new user, mount and network namespaces (`userns`), brings loopback up, makes the whole
filesystem read-only but for a private size-capped scratch at /tmp, /dev/shm and $HOME, hides the
`--hide` paths (keeping the `--keep` ones under them reachable), moves to $HOME, and forks an init
into a new pid namespace, which forks the tool with resource limits and proxy variables set, as an
unprivileged uid. It is started with -I -S and imports only the standard library and its own
modules: no site-packages, so no `.pth` file anywhere runs code in it. The bootstrap stays as their parent to relay 127.0.0.1:<port> to
the egress proxy's unix socket (the one way out of the namespace), to pass SIGTERM/SIGINT on, and
to exit with the tool's status (128+N for signal N). With `--no-netns` (run without namespaces)
there is nothing to hide paths or pids with, so the tool is forked directly.
The tool speaks JSON-RPC over the stdin/stdout it inherits, so nothing here writes to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import fcntl
import functools
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
from typing import NoReturn

from agentstream.sandbox._relay import relay
from agentstream.sandbox.isolation import (
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    confine_filesystem,
    drop_privileges,
    mount,
    new_pid_namespace,
    run_init,
)
from agentstream.sandbox.userns import enter_namespaces

SETUP_FAILED = 125
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_PR_SET_PDEATHSIG = 1
FORWARDED_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


class SetupError(Exception):
    pass


def _log(message: str) -> None:
    print(f"agentstream-sandbox: {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    if "--" not in argv:
        raise SetupError("expected '--' before the tool's command")
    split = argv.index("--")
    # add_help=False: argparse prints help to stdout, which belongs to the tool's JSON-RPC stream.
    parser = argparse.ArgumentParser(prog="agentstream.sandbox.bootstrap", add_help=False)
    parser.add_argument("--proxy-socket")
    parser.add_argument("--no-netns", action="store_true")
    parser.add_argument("--hide", action="append", default=[])
    parser.add_argument("--keep", action="append", default=[])
    parser.add_argument("--writable", action="append", default=[])
    parser.add_argument("--cpu-seconds", type=int, required=True)
    parser.add_argument("--memory-mb", type=int, required=True)
    parser.add_argument("--nproc", type=int, required=True)
    parser.add_argument("--nofile", type=int, required=True)
    parser.add_argument("--fsize-mb", type=int, required=True)
    parser.add_argument("--scratch-mb", type=int, required=True)
    parser.add_argument("--tool-uid", type=int, required=True)
    parser.add_argument("--tool-gid", type=int, required=True)
    options = parser.parse_args(argv[:split])
    command = argv[split + 1 :]
    if not command:
        raise SetupError("no tool command after '--'")
    return options, command


def bring_loopback_up() -> None:
    candidates = ["/usr/sbin/ip", "/sbin/ip", shutil.which("ip")]
    ip = next((path for path in candidates if path and os.access(path, os.X_OK)), None)
    if ip is not None:
        # stdin too: the tool's first JSON-RPC request must not be swallowed by a helper process.
        done = subprocess.run(
            [ip, "link", "set", "lo", "up"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=False
        )
        if done.returncode == 0:
            return
        _log(f"'{ip} link set lo up' exited {done.returncode}; trying ioctl")
    loopback_up_by_ioctl()


def loopback_up_by_ioctl() -> None:
    """What `ip link set lo up` does, for images that ship without iproute2."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | _IFF_UP))


def resource_limits(options: argparse.Namespace) -> list[tuple[int, int, int]]:
    return [
        # Soft then hard: SIGXCPU at the limit, SIGKILL a second later if the tool catches SIGXCPU.
        (resource.RLIMIT_CPU, options.cpu_seconds, options.cpu_seconds + 1),
        (resource.RLIMIT_AS, options.memory_mb * 1024 * 1024, options.memory_mb * 1024 * 1024),
        (resource.RLIMIT_NPROC, options.nproc, options.nproc),
        (resource.RLIMIT_NOFILE, options.nofile, options.nofile),
        (resource.RLIMIT_CORE, 0, 0),
        # Per file, on top of the scratch's own size: a write past it fails with EFBIG (or SIGXFSZ).
        (resource.RLIMIT_FSIZE, options.fsize_mb * 1024 * 1024, options.fsize_mb * 1024 * 1024),
    ]


def apply_limits(limits: list[tuple[int, int, int]]) -> None:
    for which, soft, hard in limits:
        _, current_hard = resource.getrlimit(which)
        # Only lowering is allowed; a hard limit already below ours stays and still binds.
        if current_hard != resource.RLIM_INFINITY:
            hard = min(hard, current_hard)
            soft = min(soft, hard)
        resource.setrlimit(which, (soft, hard))


def tool_environment(proxy_port: int | None) -> dict[str, str]:
    env = dict(os.environ)
    # RLIMIT_AS counts reserved address space, and glibc reserves 64 MiB per thread arena.
    env.setdefault("MALLOC_ARENA_MAX", "2")
    if proxy_port is not None:
        url = f"http://127.0.0.1:{proxy_port}"
        env.update(dict.fromkeys(PROXY_VARIABLES, url))
        # Empty, not absent-or-inherited: an exempt host would bypass the proxy into the empty namespace.
        env["NO_PROXY"] = env["no_proxy"] = ""
    return env


def _exec_tool(
    command: list[str],
    env: dict[str, str],
    limits: list[tuple[int, int, int]],
    parent: int,
    mask: set[int | signal.Signals],
    *,
    confine: bool = False,
    switch_to: tuple[int, int] | None = None,
) -> NoReturn:
    try:
        with contextlib.suppress(OSError, AttributeError):
            # If the bootstrap is killed outright, the tool must not live on outside its supervision.
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(SETUP_FAILED)
        # Python ignores SIGPIPE and SIGXFSZ for itself; an exec'd tool expects the defaults. A
        # SIGTERM/SIGINT already pending then ends the tool before it starts, as it would have.
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, *FORWARDED_SIGNALS):
            signal.signal(sig, signal.SIG_DFL)
        apply_limits(limits)
        if confine:
            drop_privileges(switch_to)  # last: the steps above may need the user namespace's root
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.execvpe(command[0], command, env)
    except FileNotFoundError:
        _log(f"command not found: {command[0]}")
        os._exit(127)
    except BaseException as exc:
        _log(f"cannot start {command[0]}: {exc}")
        os._exit(126)


def _detach_stdio() -> None:
    # The tool alone holds the pipes, so its peer sees EOF the moment the tool is gone.
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)


async def _forward_connection(proxy_socket: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        up_reader, up_writer = await asyncio.open_unix_connection(proxy_socket)
    except OSError as exc:
        _log(f"egress proxy unreachable: {exc}")
        writer.close()
        return
    await relay(reader, writer, up_reader, up_writer)


def _signal_tool(pidfd: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        signal.pidfd_send_signal(pidfd, sig)


def _mark_done(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


async def supervise(
    pidfd: int, listener: socket.socket | None, proxy_socket: str | None, mask: set[int | signal.Signals]
) -> None:
    """Relays egress and passes signals on until the tool exits (its pidfd turns readable)."""
    loop = asyncio.get_running_loop()
    for sig in FORWARDED_SIGNALS:
        loop.add_signal_handler(sig, _signal_tool, pidfd, sig)
    # Held since before the fork, so a signal sent meanwhile is forwarded now rather than lost.
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    server: asyncio.Server | None = None
    if listener is not None and proxy_socket is not None:
        server = await asyncio.start_server(functools.partial(_forward_connection, proxy_socket), sock=listener)
    exited: asyncio.Future[None] = loop.create_future()
    loop.add_reader(pidfd, _mark_done, exited)
    try:
        await exited
    finally:
        loop.remove_reader(pidfd)
        if server is not None:
            server.close()


def _home() -> str | None:
    home = os.path.normpath(os.environ.get("HOME", ""))
    return home if home.startswith("/") and home != "/" else None


def probe(argv: list[str]) -> int:
    """`--probe --tool-uid U --tool-gid G`: whether everything `main` needs works here (the
    namespaces and id maps, tmpfs, mount_setattr, a pid namespace with its /proc); exit 0 if so."""
    parser = argparse.ArgumentParser(prog="agentstream.sandbox.bootstrap --probe", add_help=False)
    parser.add_argument("--tool-uid", type=int, required=True)
    parser.add_argument("--tool-gid", type=int, required=True)
    try:
        options = parser.parse_args(argv)
        switch_to = enter_namespaces(options.tool_uid, options.tool_gid)
        confine_filesystem([], [], home=None, scratch_mb=1, owner=switch_to or (0, 0))
        new_pid_namespace()
        child = os.fork()
        if child == 0:
            try:
                mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
                os._exit(0)
            except BaseException:
                os._exit(1)
        _, status = os.waitpid(child, 0)
    except (OSError, ValueError) as exc:
        _log(f"sandbox probe failed: {exc}")
        return SETUP_FAILED
    return os.waitstatus_to_exitcode(status)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--probe"]:
        return probe(argv[1:])
    switch_to: tuple[int, int] | None = None
    try:
        options, command = parse_args(argv)
        # Mount points made for the tool must be traversable by its (other) uid.
        os.umask(0o022)
        if not options.no_netns:
            switch_to = enter_namespaces(options.tool_uid, options.tool_gid)
            bring_loopback_up()  # before the pid namespace: its first child would become init
            home = _home()
            confine_filesystem(
                options.hide, options.keep, home=home, scratch_mb=options.scratch_mb, owner=switch_to or (0, 0),
                writable=options.writable,
            )  # fmt: skip
            # A working directory inside a hidden path would still reach its contents by relative
            # paths (a cover hides names, not an open directory), so the tool starts in its HOME.
            os.chdir(home if home and os.path.isdir(home) else "/")
            new_pid_namespace()
        listener: socket.socket | None = None
        if options.proxy_socket:
            # Python sockets are close-on-exec, so the tool cannot take the listener over.
            listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        env = tool_environment(listener.getsockname()[1] if listener else None)
        limits = resource_limits(options)
    except (SetupError, OSError, ValueError, subprocess.SubprocessError) as exc:
        # Fail closed: a tool whose paths could not be hidden must not start at all.
        _log(f"sandbox setup failed: {exc}")
        return SETUP_FAILED
    parent = os.getpid()
    # Blocked until the handlers that forward them exist; otherwise a SIGTERM in between would
    # kill the bootstrap alone and leave the tool to die by SIGKILL instead of shutting down.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
    supervisor = os.pidfd_open(parent)  # init's way to tell that its parent is gone
    pid = os.fork()
    if pid == 0:
        if options.no_netns:
            _exec_tool(command, env, limits, parent, mask)
        if listener is not None:
            listener.close()  # only the bootstrap relays; the fd is shared, so this closes a copy
        run_init(
            functools.partial(_exec_tool, command, env, limits, mask=mask, confine=True, switch_to=switch_to),
            FORWARDED_SIGNALS, supervisor, SETUP_FAILED,
        )  # fmt: skip
    os.close(supervisor)
    _detach_stdio()
    # A pidfd, not the pid, so a signal can never reach a recycled pid after the tool is reaped.
    pidfd = os.pidfd_open(pid)
    # Not Python's default_int_handler, or asyncio.run installs its own that raises KeyboardInterrupt.
    # (SIG_DFL, not SIG_IGN: ignoring a signal would discard one already pending.)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        asyncio.run(supervise(pidfd, listener, options.proxy_socket, mask))
    finally:
        os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
