"""The security bench (issue 13): every attack of bench/attacks/ against the real components, each
attempt defended, then (where a defense has an off switch) the same attack with the defense off in
a throwaway deployment, so that the bench shows it can see an attack succeed.

    .venv/bin/python bench/security.py [--kinds sandbox,egress,...]

Progress goes to stderr; the LAST line of stdout is one JSON object:
`{"attacks": N, "succeeded": 0, "control_attacks": ..., "control_succeeded": M, "by_kind": {...},
"no_control": [...], ...}`. Exit 0 when no defended attack succeeded, none of them errored (an
attempt that could not be made proves nothing) and at least one control attack succeeded.

One secured local broker (SASL/SCRAM + ACLs, as a user's) serves every defended kind; the Kafka
control starts a throwaway PLAINTEXT broker with no authorizer. Every process started is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentstream.config import ModelSettings, Settings
from agentstream.kafka.auth import ADMIN, CREDENTIALS_DIR_ENV, SASL_FILE_ENV
from agentstream.localkafka import LocalKafka, free_port
from agentstream.netguard import ALLOW_PRIVATE_ENV
from agentstream.stack import ensure_topics
from bench import security_stages as stages
from bench import security_targets as targets
from bench.security_tally import Tally, environment

KINDS = ("sandbox", "egress", "kafka", "forged_events", "key_separation", "redos", "approvals",
         "secret_binding", "denied_call_loop", "irreversible_resend")  # fmt: skip
# The kinds attacked on the shared deployment (bench/security_stages.platform_kinds).
PLATFORM = frozenset({"egress", "redos", "approvals", "secret_binding", "denied_call_loop"})


@contextlib.asynccontextmanager
async def secure_broker(work: Path) -> AsyncIterator[Settings]:
    """The local broker as a user gets it, and admin Settings for it (as tests/conftest.py does)."""
    kafka = LocalKafka(work / "broker", port=free_port(), controller_port=free_port(), credentials_dir=work / "keys")
    await kafka.start()
    try:
        env = {SASL_FILE_ENV: str(kafka.credentials.path(ADMIN)), CREDENTIALS_DIR_ENV: str(kafka.credentials.directory)}
        with environment(**env):
            home = work / "admin-home"
            home.mkdir()
            settings = Settings(bootstrap_servers=kafka.bootstrap, topic_prefix=f"sec{uuid.uuid4().hex[:8]}",
                                home=home, model=ModelSettings(), kafka_extra=kafka.admin_config(),
                                kafka_credentials_dir=kafka.credentials.directory)  # fmt: skip
            await ensure_topics(settings)
            yield settings
    finally:
        await kafka.stop()


async def run(kinds: frozenset[str], work: Path) -> Tally:
    tally = Tally()
    if "sandbox" in kinds:
        with tally.timed("sandbox"):
            await targets.sandbox_kind(tally, work, control=False)
            await targets.sandbox_kind(tally, work, control=True)
    if "egress" in kinds:
        with tally.timed("egress_proxy"):
            await targets.egress_kind(tally, work, control=False)
            await targets.egress_kind(tally, work, control=True)
    if "key_separation" in kinds:
        with tally.timed("key_separation"):
            await targets.key_separation_kind(tally, work)
    if "irreversible_resend" in kinds:
        with tally.timed("irreversible_resend"):
            await targets.irreversible_kind(tally, work, control=False)
            await targets.irreversible_kind(tally, work, control=True)
    if "redos" in kinds:
        with tally.timed("redos_output_schema"):
            await targets.redos_standalone(tally)
    if kinds & (PLATFORM | {"kafka", "forged_events"}):
        with tally.timed("broker_start"):
            broker = secure_broker(work)
            settings = await broker.__aenter__()
        try:
            if "kafka" in kinds:
                with tally.timed("kafka"):
                    await tally.stage("kafka", lambda: _kafka(tally, settings, work))
            if "forged_events" in kinds:
                with tally.timed("forged_events"):
                    await tally.stage("forged_events", lambda: _trust(tally, settings, work))
            if kinds & PLATFORM:
                with tally.timed("platform_stage"):
                    await tally.stage("platform", lambda: stages.platform_kinds(tally, settings, work, kinds))
        finally:
            await broker.__aexit__(None, None, None)
    return tally


async def _kafka(tally: Tally, settings: Settings, work: Path) -> None:
    names = await targets.kafka_kind(tally, settings)
    await targets.kafka_control(tally, work, settings.topic_prefix, names)


async def _trust(tally: Tally, settings: Settings, work: Path) -> None:
    await stages.forged_events_kind(tally, settings, work, control=False)
    await stages.forged_events_kind(tally, settings, work, control=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated subset of {','.join(KINDS)}")
    args = parser.parse_args()
    kinds = frozenset(k.strip() for k in args.kinds.split(",") if k.strip())
    if unknown := kinds - set(KINDS):
        parser.error(f"unknown kinds: {sorted(unknown)}")
    work = Path(tempfile.mkdtemp(prefix="agentstream-secbench-"))
    work.chmod(0o755)  # a sandboxed tool's uid reaches its server script below it
    start = time.monotonic()
    try:
        with environment(**{ALLOW_PRIVATE_ENV: None}):  # the production rules, whatever the shell says
            tally = asyncio.run(run(kinds, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = tally.summary()
    summary["kinds"] = sorted(kinds)
    summary["wall_s"] = round(time.monotonic() - start, 1)
    print(orjson.dumps(summary).decode())
    ok = summary["succeeded"] == 0 and summary["control_succeeded"] > 0 and summary["defended_errors"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
