"""The sandbox's user, mount and network namespaces, entered by the bootstrap itself.

`unshare --map-root-user` maps the namespace's root to the executor's uid, so with the executor
running as root the tool was host root (and could write whatever a missed mount left writable).
Here a helper left behind in the host's namespaces writes the id maps instead, because only a
process privileged there may map a second uid:

* executor is root: namespace uid/gid 0 -> host 0 for the bootstrap's own setup (mounts, `ip`),
  and `tool_uid`/`tool_gid` -> the same unprivileged host ids, which the tool switches to before
  it is exec'd. Files it creates belong to that uid on the host; it is never host root.
* executor is not root: the one mapping an unprivileged process may write, 0 -> its own uid.
  The tool then runs as the executor's (unprivileged) uid, stripped of every capability.
"""

from __future__ import annotations

import ctypes
import functools
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def id_maps(host_uid: int, host_gid: int, tool_uid: int, tool_gid: int) -> tuple[str, str, bool]:
    """The uid_map and gid_map text, and whether the tool switches to `tool_uid`/`tool_gid`."""
    if host_uid == 0:
        if tool_uid == 0 or tool_gid == 0:
            raise ValueError("the sandbox's tool uid and gid must not be 0")
        return f"0 0 1\n{tool_uid} {tool_uid} 1\n", f"0 {host_gid} 1\n{tool_gid} {tool_gid} 1\n", True
    return f"0 {host_uid} 1\n", f"0 {host_gid} 1\n", False


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _map_from_outside(target: int, go: int, uid_map: str, gid_map: str, privileged: bool) -> None:
    """The helper: waits for `target` to have unshared, then writes its maps (never returns)."""
    code = 1
    try:
        if os.read(go, 1) == b"1":
            if not privileged:  # an unprivileged gid_map needs setgroups denied first
                _write(f"/proc/{target}/setgroups", "deny")
            _write(f"/proc/{target}/uid_map", uid_map)
            _write(f"/proc/{target}/gid_map", gid_map)
            code = 0
    except BaseException:
        code = 1
    os._exit(code)


def enter_namespaces(tool_uid: int, tool_gid: int) -> tuple[int, int] | None:
    """Moves the calling (single-threaded) process into new user, mount and network namespaces as
    their root, with every capability there. Returns the ids the tool must switch to, or None when
    it stays at the namespace's root (mapped to the unprivileged executor). Raises OSError."""
    uid_map, gid_map, switch = id_maps(os.geteuid(), os.getegid(), tool_uid, tool_gid)
    me = os.getpid()
    go_read, go_write = os.pipe()
    helper = os.fork()
    if helper == 0:
        os.close(go_write)
        _map_from_outside(me, go_read, uid_map, gid_map, switch)
    os.close(go_read)
    try:
        if _libc().unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"unshare(user, mount, net): {os.strerror(err)}")
        os.write(go_write, b"1")
    finally:
        os.close(go_write)
        _, status = os.waitpid(helper, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise OSError(f"could not write the sandbox's id maps ({uid_map.strip()!r})")
    return (tool_uid, tool_gid) if switch else None


def switch_user(uid: int, gid: int) -> None:
    """Becomes `uid`/`gid` with no supplementary groups; the kernel clears every capability as the
    uid leaves 0 (the secure bits set before keep no way back)."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
