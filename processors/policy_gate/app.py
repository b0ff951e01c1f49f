"""The policy gate process: the pure core plus a live view of the registry and control topics."""

from __future__ import annotations

import time

from agentstream.config import Settings
from agentstream.credentials.delegation import DelegationIssuer
from agentstream.kafka.journal import RecordFactory
from agentstream.kafka.producer import AsyncProducer
from agentstream.process import Built
from agentstream.processors.policy_gate.core import PolicyGateCore
from agentstream.registry.reader import CatalogReader
from agentstream.security.signing import platform_signers


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


async def build(settings: Settings, records: RecordFactory, producer: AsyncProducer) -> Built:
    reader = CatalogReader(settings)
    await reader.start()
    signers = platform_signers(settings, "policy-gate")
    core = PolicyGateCore(
        reader.catalog, signers.capability, signers.approval, DelegationIssuer(signers.delegation), wall_clock_ms
    )

    async def close() -> None:
        reader.close()

    return Built(core=core, before_batch=[reader.poll], cleanup=[close])
