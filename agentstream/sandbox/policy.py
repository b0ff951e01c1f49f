"""What a sandboxed tool process may use: CPU, memory, processes, files, and which hosts it may reach."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SandboxPolicy:
    cpu_seconds: int = 30
    memory_mb: int = 512
    # Documentation only: the caller bounds each call's wall clock, and a server lives across calls.
    wall_clock_s: float = 60.0
    # `host` (any port) or `host:port`; `*.example.com` matches every subdomain but not the apex.
    egress_allowlist: tuple[str, ...] = ()
    max_processes: int = 64
    max_open_files: int = 256
    # RLIMIT_FSIZE: no file the tool writes grows past this (EFBIG, or SIGXFSZ for a non-Python tool).
    max_file_mb: int = 32
    # The tool's one writable place, a private tmpfs seen at /tmp, /dev/shm and its HOME: all it
    # writes there together is capped at this (ENOSPC), and gone when the sandbox ends.
    scratch_mb: int = 64
    # The unprivileged host uid/gid the tool runs as when the executor is root (otherwise it runs
    # as the executor's own uid): files it creates belong to them, and nothing of root's is its own.
    tool_uid: int = 65534
    tool_gid: int = 65534
    # False runs the tool without any namespaces (network, mount, pid): the egress proxy is then
    # advisory only and the tool sees every file and process the executor's user may see.
    network_namespace: bool = True
    # Absolute paths the tool must not see (covered by empty read-only mounts), on top of those
    # the launcher always hides: the platform's home, the executor user's home, other sandboxes.
    hidden_paths: tuple[str, ...] = ()
    # Absolute host directories the tool may write (bound read-write into its otherwise read-only
    # view): an operator's grant for a platform-wide tool's data, never a tenant's to choose.
    writable_paths: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        limits = ("cpu_seconds", "memory_mb", "max_processes", "max_open_files", "max_file_mb", "scratch_mb")
        for name in (*limits, "tool_uid", "tool_gid"):  # a tool uid/gid of 0 would be host root
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SandboxPolicy.{name} must be a positive int, got {value!r}")
        if isinstance(self.egress_allowlist, str):
            # A bare string would be iterated character by character and allow nothing sensible.
            raise TypeError("SandboxPolicy.egress_allowlist must be a tuple of entries, not a string")
        for entry in self.egress_allowlist:
            parse_allow_entry(entry)
        for field in ("hidden_paths", "writable_paths"):
            paths = getattr(self, field)
            if isinstance(paths, str):
                raise TypeError(f"SandboxPolicy.{field} must be a tuple of paths, not a string")
            for path in paths:
                if not isinstance(path, str) or not path.startswith("/"):
                    # A relative path would be resolved against whatever directory the tool starts in.
                    raise ValueError(f"SandboxPolicy.{field} entries must be absolute paths, got {path!r}")


def parse_allow_entry(entry: str) -> tuple[str, int | None]:
    """Splits an allowlist entry into a normalized host pattern and an optional port."""
    text = entry.strip()
    port_text: str | None = None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad egress allowlist entry {entry!r}")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host = text  # a bare IPv6 address has several colons and no port
    host = normalize_host(host)
    if not host or "/" in host or (host.startswith("*") and not host.startswith("*.")) or "*" in host[1:]:
        raise ValueError(f"bad egress allowlist entry {entry!r}")
    if port_text is None:
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port in egress allowlist entry {entry!r}")
    return host, int(port_text)


def normalize_host(host: str) -> str:
    # DNS names are case-insensitive and a trailing dot names the same host; both would dodge a match.
    return host.strip().strip("[]").rstrip(".").lower()


def egress_allowed(allowlist: Iterable[str], host: str, port: int) -> bool:
    target = normalize_host(host)
    if not target:
        return False
    for entry in allowlist:
        pattern, entry_port = parse_allow_entry(entry)
        if entry_port is not None and entry_port != port:
            continue
        if pattern.startswith("*."):
            if target.endswith(pattern[1:]) and len(target) > len(pattern) - 1:
                return True
        elif target == pattern:
            return True
    return False
