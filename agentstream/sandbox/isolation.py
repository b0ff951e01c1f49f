"""Filesystem and process isolation that the bootstrap sets up inside the sandbox's namespaces.

Runs as root of the sandbox's own user namespace, which owns its mount namespace, so no real
privilege is used: mounts made here exist only in the sandbox's view and vanish with it.

* `hide_paths` covers each hidden path with an empty read-only tmpfs (a file with /dev/null), then
  puts back the visible paths that lie under one (the interpreter, the sandbox's own directory).
  Without this the tool reads everything the executor's user may read: the platform's keys, every
  tenant's state, the executor's dotfiles. (With the executor running as root, that is everything.)
* `drop_privileges` strips the tool of every capability before it is exec'd: root of its user
  namespace could otherwise simply unmount the covers. (A user namespace of its own does not help
  it either: mounts copied into a less privileged mount namespace are locked together.)
* `new_pid_namespace` plus `run_init` give the tool a pid namespace and a fresh /proc: it cannot see
  or signal the executor or other tenants' tools (kill(2) needs only a matching uid, and theirs
  match), nor read their command lines, and whatever it leaves running dies with the namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import select
import signal
import stat
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
CLONE_NEWPID = 0x20000000
_PR_SET_PDEATHSIG = 1
_PR_CAPBSET_DROP = 24
_PR_SET_SECUREBITS = 28
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
# NOROOT: uid 0 gains no capabilities at execve; NO_CAP_AMBIENT_RAISE: none come back as ambient;
# each with its LOCKED bit, and KEEP_CAPS locked off, so the tool cannot undo any of it.
_SECUREBITS = 0x01 | 0x02 | 0x40 | 0x80 | 0x20
# Only directory entries (mount points for the visible paths) ever go in a cover, so it stays tiny.
_COVER_OPTIONS = "mode=0755,size=64k,nr_inodes=4096"


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _encode(text: str | None) -> bytes | None:
    return None if text is None else os.fsencode(text)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    result = _libc().mount(_encode(source), _encode(target), _encode(fstype), ctypes.c_ulong(flags), _encode(data))
    _check(result, f"mount {target}")


def _under(path: str, ancestor: str) -> bool:
    return path == ancestor or path.startswith(ancestor.rstrip("/") + "/")


def _depth(path: str) -> int:
    return len([part for part in path.split("/") if part])


def hide_paths(hidden: Sequence[str], visible: Sequence[str]) -> None:
    """Hides `hidden` (absolute, symlink-free paths), keeping each of `visible` reachable at its path.

    Applied outermost first, so a visible path inside a hidden one is put back, and a hidden path
    inside a visible one is hidden again after that; a path named in both stays hidden.
    """
    # Our mounts must never propagate to the host's mount namespace (unshare makes it so already).
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    # Opened before anything is covered: afterwards these paths are unreachable by name.
    handles = {path: os.open(path, os.O_PATH | os.O_CLOEXEC) for path in visible if os.path.exists(path)}
    try:
        hide_set = set(hidden)
        operations = sorted({(_depth(p), 0, p) for p in hidden} | {(_depth(p), 1, p) for p in handles})
        applied: list[tuple[str, bool]] = []  # (path, whether it was covered) in the order applied
        covers: list[str] = []
        for _, is_visible, path in operations:
            if not is_visible:
                if not os.path.lexists(path):
                    continue  # never there, or already under a cover
                if os.path.isdir(path):
                    mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, _COVER_OPTIONS)
                    covers.append(path)
                else:
                    mount("/dev/null", path, None, MS_BIND)
                applied.append((path, True))
                continue
            # Put back only where the nearest enclosing operation covered it; anything else is in view.
            enclosing = [(p, covered) for p, covered in applied if _under(path, p)]
            if path in hide_set or not enclosing or not max(enclosing, key=lambda pc: len(pc[0]))[1]:
                continue
            handle = handles[path]
            # The mount point goes in the cover (the nearest enclosing mount), never on a real disk.
            if stat.S_ISDIR(os.fstat(handle).st_mode):
                os.makedirs(path, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "a"):
                    pass
            mount(f"/proc/self/fd/{handle}", path, None, MS_BIND | MS_REC)
            applied.append((path, False))
        for path in covers:
            # Read-only once the mount points exist: the tool cannot stash anything in a cover.
            mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    finally:
        for handle in handles.values():
            os.close(handle)


def _prctl(option: int, arg: int, what: str) -> None:
    result = _libc().prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    _check(result, what)


def drop_privileges() -> None:
    """Leaves the calling process (about to exec the tool) no way to hold a capability: an empty
    bounding set (not even a file-capability binary gains one), no root privilege at execve, no
    ambient set, and no_new_privs. Raises OSError, so a tool that would keep any never starts."""
    _prctl(_PR_SET_SECUREBITS, _SECUREBITS, "prctl(PR_SET_SECUREBITS)")
    cap = 0
    while _libc().prctl(_PR_CAPBSET_DROP, ctypes.c_ulong(cap), ctypes.c_ulong(0), ctypes.c_ulong(0),
                        ctypes.c_ulong(0)) == 0:  # fmt: skip
        cap += 1
    if ctypes.get_errno() != errno.EINVAL or cap == 0:  # EINVAL: past the kernel's last capability
        raise OSError(ctypes.get_errno(), f"prctl(PR_CAPBSET_DROP, {cap}) failed")
    _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, "prctl(PR_CAP_AMBIENT_CLEAR_ALL)")
    _prctl(_PR_SET_NO_NEW_PRIVS, 1, "prctl(PR_SET_NO_NEW_PRIVS)")


def new_pid_namespace() -> None:
    """The next child this process forks becomes pid 1 of a new pid namespace (and must stay up:
    once it exits, no process can enter that namespace any more)."""
    _check(_libc().unshare(CLONE_NEWPID), "unshare(CLONE_NEWPID)")


def _set_death_signal() -> None:
    with contextlib.suppress(OSError, AttributeError):
        _libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _gone(pidfd: int) -> bool:
    return bool(select.select([pidfd], [], [], 0)[0])


def run_init(
    start_tool: Callable[[int], NoReturn],
    forwarded: frozenset[signal.Signals],
    mask: set[int | signal.Signals],
    supervisor: int,
    setup_failed: int,
) -> NoReturn:
    """The pid namespace's init: mounts its /proc, forks the tool (`start_tool(parent_pid)`), passes
    `forwarded` signals on, reaps every orphan, and exits with the tool's status (128+N for signal N).

    The tool is not made pid 1 itself because pid 1 ignores every signal it has no handler for, so
    a plain SIGTERM would no longer stop it; a tiny init keeps the usual signal semantics.
    """
    try:
        # If the bootstrap (`supervisor`, a pidfd) dies, so does init, and with it the namespace.
        _set_death_signal()
        if _gone(supervisor):
            os._exit(setup_failed)
        os.close(supervisor)
        # Covers the host's /proc, which would list (and by uid match open) every host process.
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        parent = os.getpid()
        tool = os.fork()
        if tool == 0:
            start_tool(parent)
        pidfd = os.pidfd_open(tool)
        # The tool alone holds the stdio pipes, so its peer sees EOF the moment the tool is gone.
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.close(devnull)

        def forward(sig: int, _frame: object) -> None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, sig)

        for sig in forwarded:
            signal.signal(sig, forward)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        while True:
            pid, status = os.waitpid(-1, 0)  # retried after a forwarding handler runs (PEP 475)
            if pid == tool:
                code = os.waitstatus_to_exitcode(status)
                # Exiting ends the namespace: the kernel kills whatever the tool left running.
                os._exit(128 - code if code < 0 else code)
    except BaseException as exc:
        with contextlib.suppress(BaseException):
            print(f"agentstream-sandbox: init failed: {exc}", file=sys.stderr, flush=True)
        os._exit(setup_failed)
