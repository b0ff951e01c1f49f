"""The embedded default broker: a real single-node Apache Kafka 4.x (KRaft) from Maven Central jars.

Life cycle: fetch the pinned jars once into a cache (`infra/kafka/pom.xml`), format a KRaft log
dir (`kafka.tools.StorageTool --standalone`), start `kafka.Kafka` as a detached JVM, health-check
with a metadata request, stop with SIGTERM (SIGKILL after a grace period).
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient

REPO_ROOT = Path(__file__).resolve().parents[1]
POM = REPO_ROOT / "infra" / "kafka" / "pom.xml"
LOG4J = REPO_ROOT / "infra" / "kafka" / "log4j.properties"


# A single-node broker sharing a small machine with its clients: the C1 JIT alone warms up in
# seconds and, measured here, halved the broker's CPU per journal step against the default tiered
# C2 compilation, which kept a core busy compiling for the first minute of every benchmark.
DEFAULT_JVM_OPTS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


class LocalKafkaError(RuntimeError):
    pass


def jar_cache_dir() -> Path:
    base = os.environ.get("AGENTSTREAM_CACHE") or os.path.join(Path.home(), ".cache", "agentstream")
    version = _pinned_version()
    return Path(base) / f"kafka-{version}"


def _pinned_version() -> str:
    text = POM.read_text()
    start = text.index("<kafka.version>") + len("<kafka.version>")
    return text[start : text.index("</kafka.version>")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def ensure_jars(progress: bool = True) -> Path:
    """Fetches the broker jars once; later calls return the cached folder."""
    target = jar_cache_dir()
    marker = target / ".complete"
    if marker.exists():
        return target
    if shutil.which("mvn") is None:
        raise LocalKafkaError(
            "Maven (mvn) is needed once to fetch the Kafka jars; install it or set KAFKA_BOOTSTRAP_SERVERS"
        )
    if progress:
        print(
            f"fetching Apache Kafka {_pinned_version()} jars from Maven Central into {target} (once) ...",
            file=sys.stderr,
        )
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    proc = await asyncio.create_subprocess_exec(
        "mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
        "-DincludeScope=runtime", f"-DoutputDirectory={tmp}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise LocalKafkaError(f"mvn failed to fetch the Kafka jars:\n{out.decode(errors='replace')[-2000:]}")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    marker.write_text("ok\n")
    return target


@dataclass
class LocalKafka:
    data_dir: Path
    port: int = 19092
    controller_port: int = 19093
    heap: str = "768m"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    def _properties(self) -> str:
        logs = self.data_dir / "logs"
        return "\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"log.dirs={logs}",
            "auto.create.topics.enable=false",
            "num.partitions=1",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=8",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "group.initial.rebalance.delay.ms=0",
            "num.network.threads=2",
            "num.io.threads=2",
            "log.cleaner.threads=1",
            "log.cleaner.dedupe.buffer.size=16777216",
            "",
        ])  # fmt: skip

    def running_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    async def start(self, timeout_s: float = 60.0) -> None:
        if self.running_pid() is not None and await self.is_ready(2.0):
            return
        jars = await ensure_jars()
        java = shutil.which("java")
        if java is None:
            raise LocalKafkaError(
                "Java 17+ is needed for the local Kafka broker; install it or set KAFKA_BOOTSTRAP_SERVERS"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = self.data_dir / "server.properties"
        props.write_text(self._properties())
        classpath = f"{jars}/*"
        log_opts = [f"-Dlog4j.configuration=file:{LOG4J}", f"-Dkafka.logs.file={self.log_file}"]
        if not (self.data_dir / "logs" / "meta.properties").exists():
            cluster_id = new_cluster_id()
            fmt = await asyncio.create_subprocess_exec(
                java, *log_opts, "-cp", classpath, "kafka.tools.StorageTool", "format",
                "-t", cluster_id, "-c", str(props), "--standalone",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            out, _ = await fmt.communicate()
            if fmt.returncode != 0:
                raise LocalKafkaError(f"formatting the KRaft log dir failed:\n{out.decode(errors='replace')[-2000:]}")
        jvm = os.environ.get("AGENTSTREAM_KAFKA_JVM_OPTS", DEFAULT_JVM_OPTS).split()
        cmd = [java, "-Xms256m", f"-Xmx{self.heap}", *jvm, "-Djava.awt.headless=true", *log_opts,
               "-cp", classpath, "kafka.Kafka", str(props)]  # fmt: skip
        proc = await asyncio.to_thread(_spawn_daemon, cmd, self.data_dir / "broker.stdout")
        self.pid_file.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = self.log_file.read_text(errors="replace")[-3000:] if self.log_file.exists() else ""
                raise LocalKafkaError(f"the local broker exited with code {proc.returncode}:\n{tail}")
            if await self.is_ready(1.0):
                return
            await asyncio.sleep(0.25)
        raise LocalKafkaError(f"the local broker was not ready within {timeout_s:.0f}s (log: {self.log_file})")

    async def is_ready(self, timeout_s: float = 1.0) -> bool:
        def probe() -> bool:
            try:
                md = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": "0"}).list_topics(timeout=timeout_s)
                return bool(md.brokers)
            except Exception:
                return False

        return await asyncio.to_thread(probe)

    async def stop(self, grace_s: float = 20.0) -> None:
        pid = self.running_pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
                if _is_zombie(pid):
                    break
            except OSError:
                break
            await asyncio.sleep(0.2)
        else:
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def _spawn_daemon(cmd: list[str], output: Path) -> subprocess.Popen[bytes]:
    # Popen, not asyncio's subprocess: the broker must outlive the event loop (and the CLI) that
    # started it, and asyncio kills its child processes when the loop closes.
    with open(output, "ab") as stdout:
        return subprocess.Popen(
            cmd, stdout=stdout, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )


def new_cluster_id() -> str:
    """A KRaft cluster id (base64url of a UUID) that does not start with '-': the storage tool's
    argument parser would take such an id for an option and refuse to format."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if cluster_id[0].isalnum():
            return cluster_id
