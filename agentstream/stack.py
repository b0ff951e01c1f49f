"""Brings up what a local deployment needs: broker, topics, model endpoint, one OS process per
processor. Used by `agentstream dev` / `demo`, the tests and the benchmarks."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

from agentstream.client.journal import JournalClient
from agentstream.config import LOCAL_BOOTSTRAP, Settings
from agentstream.credentials.signing_keys import ensure_key_bundles_in
from agentstream.kafka.acls import AclError, apply_acls
from agentstream.kafka.auth import CREDENTIALS_DIR_ENV, ENGINE, with_principal
from agentstream.localcluster import LocalCluster, cluster_dir
from agentstream.localkafka import LocalKafka
from agentstream.processors.catalog import deployed_cores
from agentstream.registry.admin import set_policy
from agentstream.registry.entry import TenantPolicy
from agentstream.registry.reader import CatalogReader
from agentstream.settings.environ import for_child
from agentstream.topics import create_topics, load_topics

# A tenant policy that lets the demo payment tool run without a person (test and bench tenants).
PAYMENTS_AUTO_APPROVED = TenantPolicy(auto_approve=("transfer_funds",))
# `Deployment(policies=AUTO_APPROVE_DEMO)`: tenant `default` pays without a person. Never the
# default, so a test of the approval gate cannot be silently waved through by its own harness.
AUTO_APPROVE_DEMO: Mapping[str, TenantPolicy] = MappingProxyType({"default": PAYMENTS_AUTO_APPROVED})
# How `dev` and Deployment run the processors: "separate" (one OS process each: isolation, and a
# crash takes down one processor) or "engine" (all cores in one process: no hop between them).
LAYOUT_ENV = "AGENTSTREAM_LAYOUT"
# The processes of a deployment without model replicas, one per core (the registry's order).
PROCESSORS = deployed_cores(with_replicas=False)


def local_broker_at(settings: Settings, port: int) -> LocalKafka:
    """The embedded broker `dev --kafka-port PORT` runs: its controller on PORT+1 and its data in
    `<home>/kafka-PORT`, so a second deployment on other ports never shares the first one's log dir."""
    return LocalKafka(settings.home / f"kafka-{port}", port=port, controller_port=port + 1,
                      credentials_dir=settings.kafka_credentials_dir)  # fmt: skip


async def ensure_broker(settings: Settings, port: int | None = None) -> LocalKafka | LocalCluster | None:
    """Starts the embedded broker unless KAFKA_BOOTSTRAP_SERVERS points elsewhere: the local cluster
    where `agentstream kafka start --brokers N` made one and a node of it runs, else the single
    broker (on `port` when given). A cluster's clients need all its nodes: use `with_local_bootstrap`."""
    if port is not None and not settings.uses_local_broker:
        raise ValueError("a Kafka port starts a local broker, but KAFKA_BOOTSTRAP_SERVERS names a broker to use: "
                         "give one or the other")  # fmt: skip
    if not settings.uses_local_broker or (port is None and settings.bootstrap_servers != LOCAL_BOOTSTRAP):
        return None
    cluster = LocalCluster.existing(cluster_dir(settings.home), settings.kafka_credentials_dir)
    kafka: LocalKafka | LocalCluster
    if port is not None:
        kafka = local_broker_at(settings, port)
    elif cluster is not None and any(cluster.running()):
        kafka = cluster
    else:
        kafka = LocalKafka(settings.home / "kafka", credentials_dir=settings.kafka_credentials_dir)
    await kafka.start()
    # On a first start the admin's credentials did not exist when the settings were read.
    if "sasl.username" not in settings.kafka_extra:
        settings.kafka_extra.update(kafka.admin_config())
    return kafka


def with_local_bootstrap(settings: Settings, kafka: LocalKafka | LocalCluster | None) -> Settings:
    """The settings with every node of the local broker or cluster `ensure_broker` started."""
    return settings if kafka is None else replace(settings, bootstrap_servers=kafka.bootstrap)


async def ensure_topics(settings: Settings) -> list[str]:
    """Creates the missing topics, then the ACLs topics.yaml implies (kafka/acls.py)."""
    topics = load_topics(settings.topic_prefix)
    created = await create_topics(settings.bootstrap_servers, list(topics.values()), settings.kafka_extra)
    try:
        await apply_acls(settings.bootstrap_servers, topics, settings.kafka_extra)
    except AclError as exc:
        # A broker without an authorizer (a throwaway control run): `topics verify` fails on it.
        if not exc.security_disabled:
            raise
        print(f"agentstream: warning: {exc}; ACLs not applied", file=sys.stderr)
    return created


@dataclass
class ScriptedModel:
    """The scripted model server as its own process (it stands in for a provider's endpoint)."""

    scenario_dirs: list[Path] = field(default_factory=list)
    default: str = "demo"
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""

    async def start(self) -> str:
        cmd = [
            sys.executable,
            "-m",
            "agentstream.doubles.scripted_model",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--default",
            self.default,
        ]
        for d in self.scenario_dirs:
            cmd += ["--scenarios", str(d)]
        self.proc = await asyncio.to_thread(
            subprocess.Popen, cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), 30)
        text = line.decode().strip()
        if not text.startswith("SCRIPTED_MODEL_READY "):
            raise RuntimeError(f"scripted model server did not start: {text!r}")
        self.url = text.split(" ", 1)[1]
        return self.url

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@dataclass
class ProcessorProcesses:
    """One OS process per processor, so a crash (or a SIGKILL) takes down only that processor."""

    env: dict[str, str]
    log_dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080

    def issue_keys(self) -> None:
        # The parent holds the signing roots; each child reads only its own key bundle.
        ensure_key_bundles_in(Path(self.env["AGENTSTREAM_HOME"]))

    def start(self, name: str, instance: str = "0") -> None:
        self.issue_keys()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}-{instance}.log", "ab")  # noqa: SIM115 - owned by the child
        self.procs[f"{name}-{instance}"] = subprocess.Popen(
            [sys.executable, "-m", "agentstream.cli.main", "process", name, "--instance", instance],
            env=with_principal(self.env, name), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        log.close()

    def start_gateway(self, host: str | None = None, port: int | None = None) -> None:
        # Remembered, so a restarted gateway comes back where clients were told it is.
        self.gateway_host = host = host or self.gateway_host
        self.gateway_port = port = self.gateway_port if port is None else port
        self.issue_keys()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / "gateway-0.log", "ab")  # noqa: SIM115 - owned by the child
        self.procs["gateway-0"] = subprocess.Popen(
            [sys.executable, "-m", "agentstream.cli.main", "gateway", "--host", host, "--port", str(port)],
            env=with_principal(self.env, "gateway"), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        log.close()

    def cores(self) -> tuple[str, ...]:
        """The processor cores the children run: with a pool of model replicas (in their
        environment), the KV-affinity dispatcher too, routing every model call."""
        return deployed_cores(with_replicas=bool(self.env.get("AGENTSTREAM_REPLICAS", "").strip()))

    def start_all(self, names: tuple[str, ...] | None = None) -> None:
        if names is None:
            # "engine": every core in one process, handing events over in-process.
            names = (ENGINE,) if self.env.get(LAYOUT_ENV, "separate") == "engine" else self.cores()
        for name in names:
            self.start(name)

    def kill(self, key: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.get(key)
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            proc.wait()

    def restart(self, key: str) -> None:
        name, instance = key.rsplit("-", 1)
        self.kill(key)
        self.restarts[key] = self.restarts.get(key, 0) + 1
        if name == "gateway":
            self.start_gateway()
        else:
            self.start(name, instance)

    def crashed(self) -> list[str]:
        return [k for k, p in self.procs.items() if p.poll() is not None]

    async def stop_all(self, grace_s: float = 15.0) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                await asyncio.to_thread(proc.wait, grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()


def child_env(settings: Settings, model_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = for_child()
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            "AGENTSTREAM_TOPIC_PREFIX": settings.topic_prefix,
            "AGENTSTREAM_HOME": str(settings.home),
            "AGENTSTREAM_MODEL_BASE_URL": model_url,
            "AGENTSTREAM_MODEL_PROVIDER": settings.model.provider,
            **(extra or {}),
        }
    )
    # ProcessorProcesses turns this into each child's own credentials file (kafka/auth.py) and
    # drops it: no child learns where the others' are, and none inherits the admin's.
    env.pop("AGENTSTREAM_KAFKA_SASL_FILE", None)
    if settings.kafka_credentials_dir is not None:
        env[CREDENTIALS_DIR_ENV] = str(settings.kafka_credentials_dir)
    return env


async def wait_for_tools(settings: Settings, names: tuple[str, ...], timeout_s: float = 60.0) -> None:
    """Until the tool executor has registered every named platform tool."""
    async with CatalogReader(settings) as reader:
        deadline = time.monotonic() + timeout_s
        while missing := [n for n in names if reader.catalog.latest("", n) is None]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"tools never registered: {sorted(missing)}")
            await asyncio.sleep(0.2)
            await reader.catch_up()


class Deployment:
    """A whole local deployment on a given broker: scripted model server plus every processor as
    its own OS process. For tests and benchmarks; `async with Deployment(...) as d: ...`."""

    def __init__(
        self,
        settings: Settings,
        scenario_dirs: list[Path] | None = None,
        *,
        default_scenario: str = "demo",
        extra_env: dict[str, str] | None = None,
        wait_tools: tuple[str, ...] = ("calculator", "get_current_time", "convert_time", "transfer_funds"),
        policies: Mapping[str, TenantPolicy] | None = None,
        wait_tools_s: float = 60.0,
    ) -> None:
        self.settings = settings
        self.wait_tools_s = wait_tools_s
        # Tenant policies written before anything starts; none by default, so every irreversible
        # call waits for a person unless the caller opts out on purpose (AUTO_APPROVE_DEMO).
        self.policies = dict(policies or {})
        self.model = ScriptedModel(list(scenario_dirs or []), default_scenario)
        self.extra_env = extra_env or {}
        self.wait_tools = wait_tools
        self.procs: ProcessorProcesses | None = None
        self.client = JournalClient(settings)

    async def __aenter__(self) -> Deployment:
        for tenant, policy in self.policies.items():
            await set_policy(self.settings, tenant, policy, by="deployment")
        url = await self.model.start()
        self.procs = ProcessorProcesses(child_env(self.settings, url, self.extra_env), self.settings.home / "logs")
        self.procs.start_all()
        try:
            await wait_for_tools(self.settings, self.wait_tools, self.wait_tools_s)
        except BaseException:
            # `async with` runs no __aexit__ when __aenter__ fails: without this, a deployment whose
            # tools never came up would leave every processor and the model server running.
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()
        if self.procs is not None:
            await self.procs.stop_all()
        self.model.stop()

    @property
    def model_url(self) -> str:
        return self.model.url
