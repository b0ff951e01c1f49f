"""Builds the command line that runs a tool inside a sandbox, and the environment it starts with."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pwd
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence

from agentstream.config import Settings
from agentstream.sandbox.policy import SandboxPolicy
from agentstream.settings.environ import inherited

log = logging.getLogger(__name__)

BOOTSTRAP_MODULE = "agentstream.sandbox.bootstrap"
_SANDBOX_PACKAGE = os.path.dirname(os.path.abspath(__file__))
# Run with `python -I -S -c BOOTSTRAP_STUB`: no site-packages (so no `.pth` file, wherever it came
# from, runs before the sandbox is up) and no package __init__ (which would pull in third-party
# code); only the standard library and the bootstrap's own modules, all read-only to every tool.
BOOTSTRAP_STUB = (
    "import sys, types\n"
    f"for name, path in (('agentstream', {os.path.dirname(_SANDBOX_PACKAGE)!r}), "
    f"('agentstream.sandbox', {_SANDBOX_PACKAGE!r})):\n"
    "    module = types.ModuleType(name)\n"
    "    module.__path__ = [path]\n"
    "    sys.modules[name] = module\n"
    f"from {BOOTSTRAP_MODULE} import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)
_FALLBACK_PATH = "/usr/local/bin:/usr/bin:/bin"


class SandboxUnavailable(RuntimeError):
    """The policy asks for isolation this machine cannot provide; the tool must not run without it."""


def bootstrap_command() -> list[str]:
    return [sys.executable, "-I", "-S", "-c", BOOTSTRAP_STUB]


@functools.cache
def namespaces_available() -> bool:
    """Whether the bootstrap can build a sandbox here (user, mount, network and pid namespaces, the
    id maps, tmpfs and mount_setattr); probed once per process by running it with `--probe`."""
    if not sys.platform.startswith("linux"):
        return False
    policy = SandboxPolicy()
    argv = [*bootstrap_command(), "--probe", "--tool-uid", str(policy.tool_uid), "--tool-gid", str(policy.tool_gid)]
    try:
        probe = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("sandbox namespaces unavailable: %s", exc)
        return False
    if probe.returncode != 0:
        log.warning("sandbox namespaces unavailable: %s", probe.stderr.decode(errors="replace").strip())
    return probe.returncode == 0


def require_sandbox(policy: SandboxPolicy) -> None:
    if policy.network_namespace and not namespaces_available():
        raise SandboxUnavailable(
            "user, network, mount and pid namespaces (with id maps, tmpfs and mount_setattr) are not available "
            "(`python -m agentstream.sandbox.bootstrap --probe` failed); "
            "refusing to run the tool unsandboxed. Set network_namespace=False to accept that explicitly."
        )


def sandbox_root() -> str:
    """The directory every sandbox's private directory (HOME, egress socket) is made in: one place,
    so each sandbox can hide all the others' at once."""
    root = os.path.join(tempfile.gettempdir(), f"agentstream-sandboxes-{os.getuid()}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(root, 0o700)
    info = os.lstat(root)
    # In a shared temp dir someone else could have made it first, to read or swap our sockets.
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise SandboxUnavailable(f"{root} is not a private directory of this user; refusing to use it")
    return root


def make_sandbox_dir() -> str:
    path = tempfile.mkdtemp(prefix="sandbox-", dir=sandbox_root())
    # Traversable (not listable) by the tool's uid, which is not ours, on the way to its HOME. Only
    # through its own sandbox's view: the root above stays 0700 and is hidden from every tool.
    os.chmod(path, 0o711)
    return path


def platform_hidden_paths() -> list[str]:
    """What no sandboxed tool may see, whatever its policy says: the platform's home (keys, state,
    every tenant's data) and every sandbox's private directory (other tools' HOMEs and sockets)."""
    return [str(Settings.from_env().home), sandbox_root()]


def user_home_paths() -> list[str]:
    """The home of the user the executor runs as (dotfiles, cloud credentials), also hidden; unlike
    the platform's paths it may hold the interpreter, which is then put back."""
    paths = [os.path.expanduser("~")]
    with contextlib.suppress(KeyError):  # a uid without a passwd entry, as in some containers
        paths.append(pwd.getpwuid(os.getuid()).pw_dir)
    return paths


def _under(path: str, ancestor: str) -> bool:
    return path == ancestor or path.startswith(ancestor.rstrip("/") + "/")


def _hidden(paths: Iterable[str]) -> list[str]:
    found: list[str] = []
    for path in paths:
        real = os.path.realpath(path)  # a mount follows symlinks; so must the comparisons with it
        # Covering "/" (the HOME of some service users) would take the whole system with it.
        if os.path.isabs(path) and real != "/" and real not in found:
            found.append(real)
    return found


def _visible(command: str, args: Sequence[str], extra: Iterable[str], strict: Sequence[str]) -> list[str]:
    """What must stay reachable even under a hidden path: the sandbox's own directories (`extra`),
    the tool's command and the paths among its arguments, and this interpreter (the venv and its
    base, which may live in a home).
    The command is the registration's to choose, so what it brings back never reaches into
    `strict` (the platform's paths): a tool cannot name its way into the key directory."""
    derived = [os.path.dirname(command), os.path.dirname(os.path.realpath(command))]
    derived += [sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix]
    # Files the command is given (a script, a repository), read-only like everything else: the
    # private /tmp and the covers would hide them otherwise.
    derived += [arg for arg in args if os.path.isabs(arg) and os.path.exists(arg)]
    found: list[str] = []
    for path, trusted in [*((p, True) for p in extra), *((p, False) for p in derived)]:
        for form in (os.path.abspath(path), os.path.realpath(path)):
            if form in found or (not trusted and any(_under(form, hidden) for hidden in strict)):
                continue
            found.append(form)
    return found


def sandboxed_argv(
    command: str, args: list[str], policy: SandboxPolicy, proxy_socket: str | None, *, visible: Sequence[str] = ()
) -> list[str]:
    """The argv that runs `command args...` under `policy`. Without `proxy_socket` the tool gets
    no egress at all (in a network namespace) and no proxy variables. The platform's paths and
    `policy.hidden_paths` are hidden from the tool; `visible` (its HOME, say) stays reachable."""
    require_sandbox(policy)
    mounts: list[str] = []
    if policy.network_namespace:
        strict = _hidden([*platform_hidden_paths(), *policy.hidden_paths])
        for path in _hidden([*strict, *user_home_paths()]):
            mounts += ["--hide", path]
        own = [*visible, *((os.path.dirname(proxy_socket),) if proxy_socket else ())]
        for path in _visible(command, args, own, strict):
            mounts += ["--keep", path]
        platform = _hidden(platform_hidden_paths())
        for path in policy.writable_paths:
            real = os.path.realpath(path)
            if any(_under(real, hidden) or _under(hidden, real) for hidden in platform):
                raise ValueError(f"writable path {path!r} overlaps the platform's own paths; refusing it")
            mounts += ["--writable", real]
    bootstrap = [
        *bootstrap_command(),
        *(("--proxy-socket", proxy_socket) if proxy_socket else ()),
        *(() if policy.network_namespace else ("--no-netns",)),
        *mounts,
        "--cpu-seconds", str(policy.cpu_seconds),
        "--memory-mb", str(policy.memory_mb),
        "--nproc", str(policy.max_processes),
        "--nofile", str(policy.max_open_files),
        "--fsize-mb", str(policy.max_file_mb),
        "--scratch-mb", str(policy.scratch_mb),
        "--tool-uid", str(policy.tool_uid),
        "--tool-gid", str(policy.tool_gid),
        "--",
        command,
        *args,
    ]  # fmt: skip
    return bootstrap


def scrubbed_environment(extra: Mapping[str, str], *, home: str) -> dict[str, str]:
    """All a sandboxed tool inherits: PATH, a private HOME, a UTF-8 locale, and its own `extra`."""
    env = {"PATH": inherited(["PATH"]).get("PATH") or _FALLBACK_PATH, "HOME": home, "LANG": "C.UTF-8"}
    return env | dict(extra)
