"""The security bench's targets that need no deployment of processors: a sandboxed tool, the egress
proxy and the executor's HTTP client, the broker, key files, a tool server that drops its
connection. Each runner performs a kind's attacks (bench/attacks/*) defended, or with
`control=True` those with an off switch, with the defense switched off."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from agentstream.config import ModelSettings, Settings
from agentstream.credentials.signing_keys import ensure_key_bundles
from agentstream.kafka.auth import ADMIN, COMPONENTS, CredentialStore
from agentstream.localkafka import LocalKafka, free_port
from agentstream.topics import JOURNAL, create_topics, load_topics
from bench.attacks import egress, kafka, key_separation, loops, redos, sandbox
from bench.security_tally import Tally


def scratch(parent: Path, name: str) -> Path:
    """A directory a sandboxed tool's unprivileged uid can traverse (its server script lives there)."""
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=parent))
    path.chmod(0o755)
    return path


# -- sandbox ----------------------------------------------------------------------------------------

SOLO: dict[str, Callable[[sandbox.HostileTool], Awaitable[bool]]] = {
    "plant_pth_in_venv": sandbox.plant_pth,
    "edit_platform_package": sandbox.edit_package,
    "write_etc": sandbox.write_etc,
    "inherited_descriptors": sandbox.inherited_descriptors,
    "oversized_file": sandbox.oversized_file,
    "fill_scratch": sandbox.fill_scratch,
    "runs_as_host_root": sandbox.runs_as_host_root,
    "oversized_reply": sandbox.oversized_reply,
}
PAIR: dict[str, Callable[[sandbox.HostileTool, sandbox.HostileTool], Awaitable[bool]]] = {
    "shared_tmp": sandbox.shared_tmp,
    "shared_shm": sandbox.shared_shm,
    "sibling_home": sandbox.sibling_home,
}
# Not the sandbox's to switch off (the transport's message cap), or meaningless without a sandbox.
SANDBOX_NO_SWITCH = frozenset({"oversized_reply", "sibling_home"})


async def sandbox_kind(tally: Tally, work: Path, *, control: bool) -> None:
    first = await sandbox.hostile_host(scratch(work, "tenant-a"), control=control)
    second = await sandbox.hostile_host(scratch(work, "tenant-b"), control=control)
    try:
        for name, solo in SOLO.items():
            if not (control and name in SANDBOX_NO_SWITCH):
                await tally.attempt("sandbox", name, lambda f=solo: f(first), control=control)  # type: ignore[misc]
        for name, pair in PAIR.items():
            if not (control and name in SANDBOX_NO_SWITCH):
                await tally.attempt("sandbox", name, lambda f=pair: f(first, second), control=control)  # type: ignore[misc]
    finally:
        await first.host.aclose()
        await second.host.aclose()


# -- egress: the sandbox's proxy and the executor's HTTP client ----------------------------------------


async def egress_kind(tally: Tally, work: Path, *, control: bool) -> None:
    """Never offers an off-machine address to an undefended proxy (egress.OFF_MACHINE)."""
    v4 = await egress.listen("127.0.0.1", http=True)
    v6 = await egress.listen("::1")
    tmp = scratch(work, "egress")
    internal = egress.ScriptedResolver({"internal.attacker.example": [["127.0.0.1"]]})
    attacks: list[tuple[str, Callable[[], Awaitable[bool]]]] = [
        ("connect_127.0.0.1", lambda: egress.connect_internal(tmp, "127.0.0.1", v4.port, control=control)),
        ("connect_[::1]", lambda: egress.connect_internal(tmp, "::1", v6.port, control=control)),
        ("connect_127.1", lambda: egress.connect_internal(tmp, "127.1", v4.port, control=control)),
        ("connect_name_resolving_to_loopback",
         lambda: egress.connect_internal(tmp, "internal.attacker.example", v4.port, control=control,
                                         resolver=internal)),
        ("plain_http_127.0.0.1", lambda: egress.plain_http_internal(tmp, "127.0.0.1", v4.port, control=control)),
        ("dns_rebinding", lambda: egress.rebinding(tmp, control=control)),
        ("mixed_dns_answer", lambda: egress.mixed_answer(tmp, control=control)),
        ("executor_http_rebinding", lambda: egress.remote_rebinding(control=control)),
    ]  # fmt: skip
    if (name := egress.loopback_name()) is not None:
        attacks.append(("connect_hosts_name_for_loopback",
                        lambda: egress.connect_internal(tmp, name, v4.port, control=control)))  # fmt: skip
    if not control:  # off-machine addresses, and checks the address rules' switch leaves on
        attacks += [
            ("connect_localhost", lambda: egress.connect_internal(tmp, "localhost", v4.port)),  # refused by name
            ("forged_host_header", lambda: egress.forged_host(tmp)),
            ("sni_mismatch", lambda: egress.sni_mismatch(tmp)),
            ("connect_169.254.169.254", lambda: egress.connect_internal(tmp, "169.254.169.254", 80)),
            ("connect_10.0.0.1", lambda: egress.connect_internal(tmp, "10.0.0.1", 80)),
            ("plain_http_169.254.169.254", lambda: egress.plain_http_internal(tmp, "169.254.169.254", 80)),
            ("tunnel_flood", lambda: egress.tunnel_flood(tmp)),
            ("record_flood", lambda: egress.record_flood(tmp)),
            ("executor_oversized_reply", lambda: egress.oversized_reply()),
        ]
    try:
        for label, attack in attacks:
            await tally.attempt("egress", label, attack, control=control)
    finally:
        await v4.aclose()
        await v6.aclose()


# -- the broker ---------------------------------------------------------------------------------


async def kafka_kind(tally: Tally, settings: Settings) -> list[str]:
    """Every attempt of kafka.all_attacks on the defended (SASL + ACLs) broker; returns their names."""
    assert settings.kafka_credentials_dir is not None, "the defended run needs the local SASL broker"
    store = CredentialStore(settings.kafka_credentials_dir)
    components: dict[str, dict[str, str]] = {}
    for component in COMPONENTS:
        principal = store.get(component)
        if component != ADMIN and principal is not None:
            components[component] = principal.client_config()
    topics = load_topics(settings.topic_prefix)
    journal = topics[JOURNAL].name
    if not await kafka.produce(settings.bootstrap_servers, settings.kafka_extra, journal):
        raise RuntimeError("the admin could not seed the journal")
    writers = {short: topics[short].writers for short in kafka.INTERNAL_TOPICS}
    results = await kafka.all_attacks(
        settings.bootstrap_servers, settings.topic_prefix, settings.kafka_extra, components, writers
    )
    for name, succeeded in results.items():
        tally.record("kafka", name, succeeded)
    return list(results)


async def kafka_control(tally: Tally, work: Path, prefix: str, names: list[str]) -> None:
    """The same attempts on a throwaway PLAINTEXT broker with no authorizer. That broker knows no
    principals, so each attempt is made by an anonymous client, as any principal's was then;
    granting ACLs has no authorizer to ask there, so it is not tried."""
    broker = LocalKafka(work / "plain-kafka", port=free_port(), controller_port=free_port(), secure=False)
    await broker.start()
    try:
        topics = load_topics(prefix)
        await create_topics(broker.bootstrap, list(topics.values()), {})
        b, journal = broker.bootstrap, topics[JOURNAL].name
        await kafka.produce(b, {}, journal)  # a record to read back
        for name in names:
            attack: Callable[[], Awaitable[bool]] | None = None
            if " produce " in name:
                topic = topics[name.rsplit(" produce ", 1)[1]].name
                attack = lambda t=topic: kafka.produce(b, {}, t)  # noqa: E731
            elif name.endswith("read runs.journal"):
                attack = lambda: kafka.consume_any(b, {}, journal)  # noqa: E731
            elif "resets another principal's password" in name:
                attack = lambda: kafka.reset_password(b, {}, "tenant-ctl", secrets.token_urlsafe(24))  # noqa: E731
            elif "joins the orchestrator's group" in name:
                attack = lambda: kafka.join_group(b, {}, journal, f"{journal}.orchestrator")  # noqa: E731
            if attack is not None:
                await tally.attempt("kafka", name, attack, control=True)
    finally:
        await broker.stop()
        shutil.rmtree(work / "plain-kafka", ignore_errors=True)


# -- key files, a dropped irreversible call, a tool server's output schema ----------------------------


async def key_separation_kind(tally: Tally, work: Path) -> None:
    """No off switch: a pre-split deployment is the control, and there is none to start."""
    home = work / "keys-home"
    home.mkdir(mode=0o700)
    settings = Settings("127.0.0.1:1", "ks", home, ModelSettings(), kafka_extra={})
    ensure_key_bundles(settings)
    for name, attack in (("gateway_mints_capability", key_separation.gateway_mints_capability),
                         ("gateway_mints_delegation", key_separation.gateway_mints_delegation),
                         ("loose_permissions_accepted", key_separation.loose_permissions_accepted),
                         ("retired_capability_accepted", key_separation.retired_capability_accepted)):  # fmt: skip
        await tally.attempt("key_separation", name, lambda a=attack: a(settings))  # type: ignore[misc]
    await tally.attempt("key_separation", "home_follows_cwd", lambda: key_separation.home_follows_cwd(work))


async def irreversible_kind(tally: Tally, work: Path, *, control: bool) -> None:
    where = scratch(work, "drop")
    await tally.attempt("irreversible_resend", "dropped_connection_resend",
                        lambda: loops.irreversible_resend(where, defended=not control), control=control)  # fmt: skip


async def redos_standalone(tally: Tally) -> None:
    await tally.attempt("redos", "tool_output_schema_backtracks", redos.hostile_output_schema)
