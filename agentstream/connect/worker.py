"""The local Kafka Connect worker: Apache Kafka's own `ConnectDistributed`, from the pinned jars,
as a detached JVM in distributed mode against the platform's broker.

Its three internal topics come from topics.yaml (created with the others, compacted), its group
and every group and transactional id of its connectors live under `<prefix>.connect`, and it
authenticates as its own principal (`connect`, SCRAM-SHA-512), which the ACLs confine to those
and to the topics it sinks. The REST API listens on loopback only.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from agentstream.connect.jars import LOG4J, ensure_plugin, ensure_worker_jars
from agentstream.jvm import running_pid, spawn_daemon
from agentstream.kafka.auth import Principal


class ConnectWorkerError(RuntimeError):
    """The worker could not start, did not answer, or refused a request."""


def _jaas(principal: Principal) -> str:
    return (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{principal.username}" password="{principal.password}";'
    )


@dataclass
class ConnectWorker:
    data_dir: Path
    bootstrap: str
    topic_prefix: str
    # None: a broker without SASL (a throwaway control run); else the worker's own principal.
    principal: Principal | None
    port: int = 18083
    heap: str = "512m"
    # More plugin.path folders beside the Iceberg sink's (e.g. the journal's converter, connectors/).
    plugin_dirs: tuple[Path, ...] = ()
    # The sink's plugin with Iceberg's S3FileIO and the AWS SDK (the warehouse's files in S3).
    s3: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def group(self) -> str:
        return f"{self.topic_prefix}.connect"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "worker.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "worker.log"

    def properties(self, plugins: Path) -> str:
        lines = [
            f"bootstrap.servers={self.bootstrap}",
            f"group.id={self.group}",
            f"config.storage.topic={self.group}.configs",
            f"offset.storage.topic={self.group}.offsets",
            f"status.storage.topic={self.group}.status",
            # The topics exist (topics.yaml); -1 lets the broker's default stand if one is missing.
            "config.storage.replication.factor=-1",
            "offset.storage.replication.factor=-1",
            "status.storage.replication.factor=-1",
            "key.converter=org.apache.kafka.connect.storage.StringConverter",
            "value.converter=org.apache.kafka.connect.json.JsonConverter",
            "value.converter.schemas.enable=false",
            f"listeners=http://127.0.0.1:{self.port}",
            "rest.advertised.host.name=127.0.0.1",
            f"rest.advertised.port={self.port}",
            f"plugin.path={','.join(str(p) for p in (plugins, *self.plugin_dirs))}",
            # The Iceberg jars carry no ServiceLoader manifests: scan the plugin folder.
            "plugin.discovery=only_scan",
            # How long an idle sink task blocks in poll before Connect calls it again: the Iceberg sink
            # answers its coordinator's commit requests only then, so this bounds the commit lag. Its
            # own offsets go with its table commits, so the short interval costs nothing.
            "offset.flush.interval.ms=1000",
            # A sink's consumer group is named by the connector (consumer.override.group.id), so it
            # falls under the worker's ACL prefix instead of Connect's default `connect-<name>`.
            "connector.client.config.override.policy=All",
            # Connectors name secrets (the warehouse's S3 keys) as ${file:<path>:<key>}: the worker
            # resolves them from a 0600 file, so the REST API shows a connector's references only.
            "config.providers=file",
            "config.providers.file.class=org.apache.kafka.common.config.provider.FileConfigProvider",
        ]
        if self.principal is not None:
            # The worker's own clients and, by prefix, every client it makes for a connector.
            auth = ["security.protocol=SASL_PLAINTEXT", "sasl.mechanism=SCRAM-SHA-512",
                    f"sasl.jaas.config={_jaas(self.principal)}"]  # fmt: skip
            lines += auth + [f"{client}.{line}" for client in ("producer", "consumer", "admin") for line in auth]
        return "\n".join([*lines, ""])

    async def start(self, timeout_s: float = 120.0) -> float:
        """Starts the worker unless it already answers; returns the seconds it took to answer."""
        began = time.monotonic()
        if self.running_pid() is not None and await self.answers():
            return 0.0
        jars, plugins = await asyncio.gather(ensure_worker_jars(), ensure_plugin(aws=self.s3))
        java = shutil.which("java")
        if java is None:
            raise ConnectWorkerError("Java 17+ is needed for the Kafka Connect worker; install it")
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        props = self.data_dir / "worker.properties"
        # It holds the worker's password: readable by its owner only, before anything is in it.
        props.touch(mode=0o600)
        props.chmod(0o600)
        props.write_text(self.properties(plugins))
        cmd = [java, f"-Xmx{self.heap}", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Djava.awt.headless=true",
               f"-Dlog4j.configuration=file:{LOG4J}", f"-Dconnect.logs.file={self.log_file}",
               "-cp", f"{jars}/*", "org.apache.kafka.connect.cli.ConnectDistributed", str(props)]  # fmt: skip
        proc = await asyncio.to_thread(spawn_daemon, cmd, self.data_dir / "worker.stdout")
        self.pid_file.write_text(f"{proc.pid}\n")
        deadline = began + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ConnectWorkerError(f"the Connect worker exited with code {proc.returncode}:\n{self._tail()}")
            if await self.answers():
                return time.monotonic() - began
            await asyncio.sleep(0.5)
        raise ConnectWorkerError(f"the Connect worker did not answer within {timeout_s:.0f}s (log: {self.log_file})")

    def _tail(self) -> str:
        texts = [p.read_text(errors="replace")[-2000:] for p in (self.log_file, self.data_dir / "worker.stdout")
                 if p.exists()]  # fmt: skip
        return "\n".join(texts)

    async def answers(self) -> bool:
        """True once the REST API answers and the worker has joined its group (it then lists connectors)."""
        try:
            async with httpx.AsyncClient(timeout=2.0) as client:
                return (await client.get(f"{self.url}/connectors")).status_code == 200
        except httpx.HTTPError:
            return False

    async def request(self, method: str, path: str, body: Any = None, timeout_s: float = 30.0) -> Any:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            try:
                resp = await client.request(method, f"{self.url}{path}", json=body)
            except httpx.HTTPError as exc:
                raise ConnectWorkerError(f"the Connect worker at {self.url} did not answer: {exc}") from None
        if resp.status_code >= 400:
            raise ConnectWorkerError(f"{method} {path}: the Connect worker answered {resp.status_code}: {resp.text}")
        return resp.json() if resp.content else None

    def running_pid(self) -> int | None:
        return running_pid(self.pid_file)

    async def stop(self, grace_s: float = 30.0) -> bool:
        """SIGTERM (the worker leaves its group and stops its tasks), SIGKILL after the grace period."""
        pid = self.running_pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while self.running_pid() is not None:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                deadline += 10.0
            await asyncio.sleep(0.2)
        self.pid_file.unlink(missing_ok=True)
        return True

    async def kill(self) -> None:
        """SIGKILL, as a crash would."""
        pid = self.running_pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            for _ in range(200):  # a SIGKILLed process is gone within milliseconds; 10 s at most
                if self.running_pid() is None:
                    break
                await asyncio.sleep(0.05)
            self.pid_file.unlink(missing_ok=True)
