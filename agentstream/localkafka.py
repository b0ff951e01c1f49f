"""The embedded default broker: a real single-node Apache Kafka 4.x (KRaft) from Maven Central jars.

Life cycle: fetch the pinned jars once into a cache (`infra/kafka/pom.xml`), format a KRaft log
dir (`kafka.tools.StorageTool --standalone`), start `kafka.Kafka` as a detached JVM, health-check
with a metadata request, stop with SIGTERM (SIGKILL after a grace period).

Security: the client listener is SASL_PLAINTEXT with SCRAM-SHA-512 only, on loopback; the KRaft
`StandardAuthorizer` refuses whatever no ACL allows. The admin principal's SCRAM credentials are
written into the log dir at format time (`--add-scram`), so the first client can authenticate;
the components' users are created through the Admin API once the broker answers. The controller
listener takes SASL PLAIN from the broker's own generated identity only: no listener a client can
reach lets ANONYMOUS (or anyone but the admin and the broker itself) act as a super user.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from agentstream.jvm import JarFetchError, fetch_jars
from agentstream.jvm import is_zombie as _is_zombie
from agentstream.jvm import spawn_daemon as _spawn_daemon
from agentstream.kafka.auth import ADMIN, BROKER, COMPONENTS, CredentialStore, Principal, upsert_users
from agentstream.resources import resource_path
from agentstream.settings import LocalBrokerSettings, once
from agentstream.topics import min_insync_for

POM = resource_path("infra", "kafka", "pom.xml")
LOG4J = resource_path("infra", "kafka", "log4j.properties")


class LocalKafkaError(RuntimeError):
    pass


def jar_cache_dir() -> Path:
    return once(LocalBrokerSettings).jar_cache() / f"kafka-{_pinned_version()}"


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
    try:
        return await fetch_jars(POM, jar_cache_dir(), f"Apache Kafka {_pinned_version()}", progress=progress,
                                hint=" or set KAFKA_BOOTSTRAP_SERVERS")  # fmt: skip
    except JarFetchError as exc:
        raise LocalKafkaError(str(exc)) from None


@dataclass
class LocalKafka:
    data_dir: Path
    port: int = 19092
    controller_port: int = 19093
    heap: str = "768m"
    # Where the principals' credentials live; default: `<home>/keys/kafka` beside `<home>/kafka`.
    credentials_dir: Path | None = None
    # False: the old PLAINTEXT broker with no authorizer, for a throwaway control run of the attack
    # benchmark only (bench/attacks/kafka.py), never for a deployment.
    secure: bool = True
    initial_heap: str = "256m"
    # One node of a replicated cluster (localcluster.py): its id, the static controller voter set
    # ("1@host:port,2@host:port,...") and the cluster id every node is formatted with. Empty voters:
    # the standalone single node, formatted with `--standalone`.
    node_id: int = 1
    voters: str = ""
    cluster_id: str = ""
    # Replicas of the broker's internal topics (consumer offsets, transaction log): the cluster's size.
    replication: int = 1
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def credentials(self) -> CredentialStore:
        return CredentialStore(self.credentials_dir or self.data_dir.parent / "keys" / "kafka")

    def admin_config(self) -> dict[str, str]:
        """librdkafka settings that authenticate as the platform admin (generated on first use)."""
        return self.credentials.ensure(ADMIN).client_config() if self.secure else {}

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    def _security(self, broker: Principal) -> list[str]:
        if not self.secure:
            return [
                f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            ]
        user, pw = broker.username, broker.password
        return [
            f"listeners=SASL_PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=SASL_PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
            "inter.broker.listener.name=SASL_PLAINTEXT",
            # Clients: SCRAM-SHA-512 only (the password never crosses the wire).
            "listener.name.sasl_plaintext.sasl.enabled.mechanisms=SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
            "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config="
            f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{user}" password="{pw}";',
            # Controller: PLAIN against a user list holding only the broker itself.
            "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
            "sasl.mechanism.controller.protocol=PLAIN",
            "listener.name.controller.plain.sasl.jaas.config="
            f'org.apache.kafka.common.security.plain.PlainLoginModule required username="{user}" password="{pw}" '
            f'user_{user}="{pw}";',
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found=false",
            f"super.users=User:{ADMIN};User:{user}",
        ]  # fmt: skip

    def _properties(self, broker: Principal) -> str:
        logs = self.data_dir / "logs"
        return "\n".join([
            "process.roles=broker,controller",
            f"node.id={self.node_id}",
            f"controller.quorum.voters={self.voters}"
            if self.voters
            else f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}",
            *self._security(broker),
            f"log.dirs={logs}",
            "auto.create.topics.enable=false",
            "num.partitions=1",
            *self._replication(),
            "offsets.topic.num.partitions=8",
            "group.initial.rebalance.delay.ms=0",
            "num.network.threads=2",
            "num.io.threads=2",
            "log.cleaner.threads=1",
            "log.cleaner.dedupe.buffer.size=16777216",
            "",
        ])  # fmt: skip

    def _replication(self) -> list[str]:
        rf, isr = self.replication, min_insync_for(self.replication)
        lines = [f"offsets.topic.replication.factor={rf}", f"transaction.state.log.replication.factor={rf}",
                 f"transaction.state.log.min.isr={isr}", f"share.coordinator.state.topic.replication.factor={rf}",
                 f"default.replication.factor={rf}", f"min.insync.replicas={isr}"]  # fmt: skip
        if rf > 1:
            # A SIGKILLed node's partitions stay leaderless until the controller fences it for
            # missed heartbeats: 3 s instead of the default 9 s of unavailability per kill.
            lines += ["broker.session.timeout.ms=3000", "broker.heartbeat.interval.ms=500"]
        return lines

    def running_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        # A broker that died as this process's child stays a zombie until reaped: not running.
        if _is_zombie(pid):
            if self._proc is not None and self._proc.pid == pid:
                self._proc.poll()
            return None
        return pid

    @property
    def _secured_marker(self) -> Path:
        # Written once the log dir holds the admin's SCRAM user: a dir without it predates SASL.
        return self.data_dir / "logs" / ".agentstream-sasl"

    async def start(self, timeout_s: float = 60.0) -> None:
        if self.running_pid() is not None and await self.is_ready(2.0):
            return
        cmd = await self.prepare(timeout_s)
        await self._run(cmd, self.admin_config(), timeout_s)
        await self.ensure_users()

    async def prepare(self, timeout_s: float = 60.0) -> list[str]:
        """Writes the properties, formats (or upgrades) the log dir; returns the command to run."""
        jars = await ensure_jars()
        java = shutil.which("java")
        if java is None:
            raise LocalKafkaError(
                "Java 17+ is needed for the local Kafka broker; install it or set KAFKA_BOOTSTRAP_SERVERS"
            )
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        store = self.credentials
        admin, broker = store.ensure(ADMIN), store.ensure(BROKER)
        props = self.data_dir / "server.properties"
        # It holds the broker's own password: readable by its owner only, before anything is in it.
        props.touch(mode=0o600)
        props.chmod(0o600)
        props.write_text(self._properties(broker))
        classpath = f"{jars}/*"
        log_opts = [f"-Dlog4j.configuration=file:{LOG4J}", f"-Dkafka.logs.file={self.log_file}"]
        jvm = once(LocalBrokerSettings).jvm_opts.split()
        cmd = [java, f"-Xms{self.initial_heap}", f"-Xmx{self.heap}", *jvm, "-Djava.awt.headless=true", *log_opts,
               "-cp", classpath, "kafka.Kafka", str(props)]  # fmt: skip
        if not (self.data_dir / "logs" / "meta.properties").exists():
            await self._format([java, *log_opts, "-cp", classpath], props, admin, broker)
        elif self.secure and not self._secured_marker.exists():
            await self._upgrade(cmd, props, admin, broker, timeout_s)
        if self.secure:
            self._secured_marker.touch()
        return cmd

    async def _format(self, java: list[str], props: Path, admin: Principal, broker: Principal) -> None:
        scram = [f"SCRAM-SHA-512=[name={p.username},password={p.password}]" for p in (admin, broker)]
        # The passwords go through a 0600 argument file (the tool's argparse4j reads `@file`), never
        # the command line, which every local user can read in /proc.
        argfile = self.data_dir / ".format-args"
        argfile.touch(mode=0o600)
        argfile.write_text("\n".join(arg for entry in scram for arg in ("--add-scram", entry)))
        try:
            fmt = await asyncio.create_subprocess_exec(
                *java, "kafka.tools.StorageTool", "format", "-t", self.cluster_id or new_cluster_id(),
                "-c", str(props), *([] if self.voters else ["--standalone"]),
                *([f"@{argfile}"] if self.secure else []),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            out, _ = await fmt.communicate()
        finally:
            argfile.unlink(missing_ok=True)
        if fmt.returncode != 0:
            text = out.decode(errors="replace")[-2000:]
            for secret in (admin.password, broker.password):
                text = text.replace(secret, "***")
            raise LocalKafkaError(f"formatting the KRaft log dir failed:\n{text}")

    async def _upgrade(
        self, cmd: list[str], props: Path, admin: Principal, broker: Principal, timeout_s: float
    ) -> None:
        """A log dir formatted before SASL has no SCRAM user to authenticate as. Start it once with
        PLAIN also accepted on the client listener, for the broker's own identity only, create the
        admin's SCRAM user as the broker, stop, and go on with SCRAM alone."""
        user, pw = broker.username, broker.password
        await asyncio.to_thread(
            props.write_text,
            self._properties(broker)
            + "listener.name.sasl_plaintext.sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN\n"
            + "listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain."
            + f'PlainLoginModule required username="{user}" password="{pw}" user_{user}="{pw}";\n',
        )
        as_broker = {**broker.client_config(), "sasl.mechanism": "PLAIN"}
        try:
            await self._run(cmd, as_broker, timeout_s)
            await upsert_users(self.bootstrap, as_broker, [admin])
        finally:
            await self.stop()
            await asyncio.to_thread(props.write_text, self._properties(broker))

    async def _run(self, cmd: list[str], auth: dict[str, str], timeout_s: float) -> None:
        await self.spawn(cmd)
        await self.wait_answers(auth, timeout_s)

    async def spawn(self, cmd: list[str]) -> None:
        self._proc = await asyncio.to_thread(_spawn_daemon, cmd, self.data_dir / "broker.stdout")
        self.pid_file.write_text(f"{self._proc.pid}\n")

    async def wait_answers(self, auth: dict[str, str], timeout_s: float, brokers: int = 1) -> None:
        """Until this node answers a metadata request listing at least `brokers` brokers."""
        proc = self._proc
        assert proc is not None, "spawn() first"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = self.log_file.read_text(errors="replace")[-3000:] if self.log_file.exists() else ""
                raise LocalKafkaError(f"the local broker exited with code {proc.returncode}:\n{tail}")
            if await self._answers(auth, 1.0, brokers):
                return
            await asyncio.sleep(0.25)
        raise LocalKafkaError(f"the local broker was not ready within {timeout_s:.0f}s (log: {self.log_file})")

    async def ensure_users(self) -> None:
        """Every component's SCRAM user, its password generated on first start. Re-set on each
        start: cheap, and it repairs a broker whose users were lost or changed by hand."""
        if self.secure:
            await upsert_users(self.bootstrap, self.admin_config(), self.credentials.ensure_all(COMPONENTS))

    async def is_ready(self, timeout_s: float = 1.0) -> bool:
        if not self.secure:
            return await self._answers({}, timeout_s)
        admin = self.credentials.get(ADMIN)
        # Never started here: nothing this store could authenticate to.
        return admin is not None and await self._answers(admin.client_config(), timeout_s)

    async def _answers(self, auth: dict[str, str], timeout_s: float, brokers: int = 1) -> bool:
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap, "log_level": "0", **auth}

        def probe() -> bool:
            try:
                md = AdminClient(conf).list_topics(timeout=timeout_s)
                return len(md.brokers) >= brokers
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
        self._reap()
        self.pid_file.unlink(missing_ok=True)

    async def kill(self) -> None:
        """SIGKILL, as a crash would: no controlled shutdown, no leadership handed over."""
        pid = self.running_pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL)
        for _ in range(200):  # a SIGKILLed process is gone within milliseconds; 10 s at most
            if self.running_pid() is None:
                break
            await asyncio.sleep(0.05)
        self._reap()
        self.pid_file.unlink(missing_ok=True)

    def _reap(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(5)


def new_cluster_id() -> str:
    """A KRaft cluster id (base64url of a UUID) that does not start with '-': the storage tool's
    argument parser would take such an id for an option and refuse to format."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if cluster_id[0].isalnum():
            return cluster_id
