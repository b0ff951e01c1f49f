"""Filesystem and process isolation that the bootstrap sets up inside the sandbox's namespaces.

Runs as root of the sandbox's own user namespace, which owns its mount namespace, so no real
privilege is used: mounts made here exist only in the sandbox's view and vanish with it.

* `confine_filesystem` makes every mount the tool sees read-only (the interpreter, the venv and
  the platform's own package included: a tool that could write there would run its code in the
  next platform process), covers each hidden path with an empty mount (a file with /dev/null),
  puts back the visible paths that lie under one, and gives the tool one writable place: a
  private tmpfs of a fixed size, seen at /tmp, /dev/shm and its HOME. Without the covers the tool
  reads everything the executor's user may read: the platform's keys, every tenant's state.
* `drop_privileges` strips the tool of every capability before it is exec'd (root of its user
  namespace could otherwise simply unmount the covers; and mounts copied into a less privileged
  mount namespace are locked together) and, when the executor is root, switches it to an
  unprivileged uid, so even a mount missed here is not writable to it on the host.
* `new_pid_namespace` plus `run_init` give the tool a pid namespace and a fresh /proc: it cannot see
  or signal the executor or other tenants' tools, nor read their command lines or descriptors, and
  whatever it leaves running dies with the namespace.
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

from agentstream.sandbox.userns import switch_user

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
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
_AT_FDCWD = -100
_AT_RECURSIVE = 0x8000
_SYS_MOUNT_SETATTR = 442  # the same number on every architecture (added after the tables merged)


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


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


def _make_dirs(path: str) -> None:
    """Creates the mount point `path` and any missing parents, each traversable by the tool."""
    missing: list[str] = []
    while not os.path.lexists(path):
        missing.append(path)
        path = os.path.dirname(path)
    for directory in reversed(missing):
        os.mkdir(directory, 0o755)


def _mount_point(path: str, handle: int) -> None:
    if stat.S_ISDIR(os.fstat(handle).st_mode):
        _make_dirs(path)
    else:
        _make_dirs(os.path.dirname(path))
        with open(path, "a"):
            pass


def make_scratch(size_mb: int, owner: tuple[int, int]) -> int:
    """Mounts the sandbox's one writable filesystem, a tmpfs of `size_mb`, and puts its `tmp` and
    `shm` directories at /tmp and /dev/shm: private to this sandbox (another tenant's tool can
    neither plant nor read anything there) and bounded together. Returns an O_PATH handle of its
    `home` directory. The staging mount at /tmp ends up underneath the private /tmp, unreachable."""
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"mode=0755,size={size_mb}m,nr_inodes=65536")
    handles: dict[str, int] = {}
    try:
        for name, mode in (("tmp", 0o1777), ("shm", 0o1777), ("home", 0o700)):
            path = os.path.join("/tmp", name)
            os.mkdir(path)
            os.chown(path, *owner)
            os.chmod(path, mode)
            handles[name] = os.open(path, os.O_PATH | os.O_CLOEXEC)
        mount(f"/proc/self/fd/{handles['tmp']}", "/tmp", None, MS_BIND)
        if os.path.isdir("/dev/shm"):
            mount(f"/proc/self/fd/{handles['shm']}", "/dev/shm", None, MS_BIND)
        return handles.pop("home")
    finally:
        for handle in handles.values():
            os.close(handle)


def hide_paths(
    hidden: Sequence[str], handles: dict[str, int], covered: Sequence[str] = (), own_mounts: Sequence[str] = ()
) -> list[str]:
    """Hides `hidden` (absolute, symlink-free paths), putting back each path of `handles` (O_PATH
    handles opened before anything was covered) where it was. `covered` are paths already replaced
    by a fresh filesystem (the private /tmp): what is put back under them gets a mount point there.
    `own_mounts` (among `handles`) are bound back even where nothing covers them, so each is a mount
    of its own, whose flags can then differ from those of the mount it lies in.

    Applied outermost first, so a visible path inside a hidden one is put back, and a hidden path
    inside a visible one is hidden again after that; a path named in both stays hidden. Returns the
    covers made; everything here is made read-only afterwards by `make_read_only`.
    """
    hide_set = set(hidden)
    operations = sorted({(_depth(p), 0, p) for p in hidden} | {(_depth(p), 1, p) for p in handles})
    # (path, whether it was covered) in the order applied
    applied: list[tuple[str, bool]] = [(path, True) for path in covered]
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
        covering = bool(enclosing) and max(enclosing, key=lambda pc: len(pc[0]))[1]
        if path in hide_set or not (covering or path in own_mounts):
            continue
        # The mount point goes in the cover (the nearest enclosing mount), never on a real disk.
        _mount_point(path, handles[path])
        mount(f"/proc/self/fd/{handles[path]}", path, None, MS_BIND | MS_REC)
        applied.append((path, False))
    return covers


def set_mount_attributes(path: str, *, set_flags: int, clear_flags: int = 0, recursive: bool = False) -> None:
    """mount_setattr(2): unlike a remount, it reaches every mount below `path` at once, those
    stacked under a cover included, and keeps each mount's other (possibly locked) flags."""
    attr = _MountAttr(set_flags, clear_flags, 0, 0)
    result = _libc().syscall(
        ctypes.c_long(_SYS_MOUNT_SETATTR), ctypes.c_int(_AT_FDCWD), _encode(path),
        ctypes.c_uint(_AT_RECURSIVE if recursive else 0), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)),
    )  # fmt: skip
    if result != 0:
        err = ctypes.get_errno()
        hint = " (mount_setattr needs Linux 5.12 or later)" if err == errno.ENOSYS else ""
        raise OSError(err, f"mount_setattr {path}: {os.strerror(err)}{hint}")


def confine_filesystem(
    hidden: Sequence[str],
    visible: Sequence[str],
    *,
    home: str | None,
    scratch_mb: int,
    owner: tuple[int, int],
    writable: Sequence[str] = (),
) -> None:
    """The tool's whole view of the filesystem: every mount read-only (the interpreter, the venv,
    the platform's package, /etc, what is put back), `hidden` covered, and one writable place, a
    private size-capped tmpfs seen at /tmp, /dev/shm and `home` (when given), owned by `owner`;
    plus the `writable` directories an operator granted, each a read-write bind of its own."""
    # Our mounts must never propagate to the host's mount namespace.
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    # Opened before anything is covered: afterwards these paths are unreachable by name. HOME is
    # not put back: the scratch takes its place, so nothing the tool writes reaches the host disk.
    kept = [path for path in dict.fromkeys([*visible, *writable]) if path != home and os.path.exists(path)]
    handles = {path: os.open(path, os.O_PATH | os.O_CLOEXEC) for path in kept}
    read_write = ["/tmp", *(("/dev/shm",) if os.path.isdir("/dev/shm") else ())]
    try:
        scratch_home = make_scratch(scratch_mb, owner)
        try:
            # Each grant a bind of its own, so making it writable reaches no other path of its mount
            # (and a hidden path inside it is still covered, after it).
            grants = [path for path in dict.fromkeys(writable) if path in handles and path not in hidden]
            covers = hide_paths(hidden, handles, covered=read_write, own_mounts=grants)
            read_write += grants
            if home and any(_under(home, place) for place in (*read_write, *covers)):
                _make_dirs(home)  # in the private /tmp or a cover, never on a real disk
            if home and os.path.isdir(home):
                mount(f"/proc/self/fd/{scratch_home}", home, None, MS_BIND)
                read_write.append(home)
        finally:
            os.close(scratch_home)
        set_mount_attributes("/", set_flags=MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, recursive=True)
        for path in read_write:  # each alone: what is put back beneath /tmp stays read-only
            set_mount_attributes(path, set_flags=MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, clear_flags=MOUNT_ATTR_RDONLY)
    finally:
        for handle in handles.values():
            os.close(handle)


def _prctl(option: int, arg: int, what: str) -> None:
    result = _libc().prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    _check(result, what)


def drop_privileges(switch_to: tuple[int, int] | None = None) -> None:
    """Leaves the calling process (about to exec the tool) no way to hold a capability: an empty
    bounding set (not even a file-capability binary gains one), no root privilege at execve, no
    ambient set, and no_new_privs; with `switch_to`, it also becomes that unprivileged uid/gid.
    Raises OSError, so a tool that would keep any privilege never starts."""
    _prctl(_PR_SET_SECUREBITS, _SECUREBITS, "prctl(PR_SET_SECUREBITS)")
    cap = 0
    while _libc().prctl(_PR_CAPBSET_DROP, ctypes.c_ulong(cap), ctypes.c_ulong(0), ctypes.c_ulong(0),
                        ctypes.c_ulong(0)) == 0:  # fmt: skip
        cap += 1
    if ctypes.get_errno() != errno.EINVAL or cap == 0:  # EINVAL: past the kernel's last capability
        raise OSError(ctypes.get_errno(), f"prctl(PR_CAPBSET_DROP, {cap}) failed")
    _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, "prctl(PR_CAP_AMBIENT_CLEAR_ALL)")
    if switch_to is not None:
        switch_user(*switch_to)  # last use of CAP_SETUID/CAP_SETGID, which it then loses
        if os.geteuid() != switch_to[0] or os.getegid() != switch_to[1]:
            raise OSError(f"still uid {os.geteuid()} gid {os.getegid()} after switching to {switch_to}")
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


def _never_called(_sig: int, _frame: object) -> None:
    return None


def _reap_all(tool: int) -> int | None:
    """Reaps every child that has exited; the tool's exit code (128+N for signal N) once it has."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return None
        if pid == 0:
            return None
        if pid == tool:
            code = os.waitstatus_to_exitcode(status)
            return 128 - code if code < 0 else code


def run_init(
    start_tool: Callable[[int], NoReturn],
    forwarded: frozenset[signal.Signals],
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
        # Blocked before the fork, so even a tool that exits at once leaves its SIGCHLD pending
        # (the tool gets `mask` back before it is exec'd).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
        tool = os.fork()
        if tool == 0:
            start_tool(parent)
        pidfd = os.pidfd_open(tool)
        # The tool alone holds the stdio pipes, so its peer sees EOF the moment the tool is gone.
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.close(devnull)
        # Pid 1 of a namespace drops a signal whose action is the default, so each gets a handler;
        # it never runs: the signals stay blocked and are taken synchronously below. A Python
        # handler around a blocking waitpid would lose a signal that lands just before the call
        # (it would run only once waitpid returned: a SIGTERM held until the tool exits anyway).
        for sig in forwarded:
            signal.signal(sig, _never_called)
        waited = {*forwarded, signal.SIGCHLD}
        while True:
            code = _reap_all(tool)
            if code is not None:
                # Exiting ends the namespace: the kernel kills whatever the tool left running.
                os._exit(code)
            info = signal.sigtimedwait(waited, 1.0)  # the timeout only bounds a missed SIGCHLD
            if info is not None and info.si_signo in forwarded:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(pidfd, info.si_signo)
    except BaseException as exc:
        with contextlib.suppress(BaseException):
            print(f"agentstream-sandbox: init failed: {exc}", file=sys.stderr, flush=True)
        os._exit(setup_failed)
