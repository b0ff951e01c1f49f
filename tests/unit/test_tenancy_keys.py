"""API keys and per-tenant rate limits as rules, without a broker (keys issued, authenticated and
revoked through the tenants topic: tests/integration/test_tenancy.py)."""

from __future__ import annotations

import pytest

from agentstream.tenancy.directory import Tenant
from agentstream.tenancy.keys import generate_key, hash_secret, parse_key
from agentstream.tenancy.ratelimit import RateLimiter, TokenBucket, retry_after_seconds


def test_keys_have_the_documented_format() -> None:
    key_id, plaintext = generate_key()
    assert len(key_id) == 12 and plaintext.startswith(f"as_{key_id}_")
    assert parse_key(plaintext) == key_id
    assert hash_secret(plaintext) == hash_secret(plaintext) and len(hash_secret(plaintext)) == 64
    assert len(plaintext[len(f"as_{key_id}_") :]) == 43 and generate_key()[1] != plaintext
    for bad in ("", "as_", f"as_{key_id}", plaintext + "x", plaintext[:-1], plaintext.replace("as_", "xs_", 1)):
        assert parse_key(bad) is None


def test_token_bucket_allows_a_burst_then_says_how_long_to_wait() -> None:
    now = [100.0]
    bucket = TokenBucket(rate_per_s=2.0, burst=3, clock=lambda: now[0])
    assert [bucket.try_acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.try_acquire() == pytest.approx(0.5)
    assert bucket.try_acquire() == pytest.approx(0.5)  # a refusal takes nothing
    now[0] += 0.25
    assert bucket.try_acquire() == pytest.approx(0.25)
    now[0] += 0.25
    assert bucket.try_acquire() == 0.0
    assert bucket.try_acquire(2) == pytest.approx(1.0)
    now[0] += 60.0  # refills up to the burst, no further
    assert [bucket.try_acquire() for _ in range(4)] == [0.0, 0.0, 0.0, pytest.approx(0.5)]
    assert retry_after_seconds(0.01) == 1 and retry_after_seconds(1.2) == 2
    with pytest.raises(ValueError):
        bucket.try_acquire(4)


def test_rate_limiter_keeps_one_bucket_per_tenant_and_follows_its_limits() -> None:
    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0])
    a = Tenant("a", "A", rate_per_s=1.0, burst=2, max_active_runs=1, disabled=False)
    b = Tenant("b", "B", rate_per_s=1.0, burst=1, max_active_runs=1, disabled=False)
    assert [limiter.try_acquire(a) for _ in range(3)] == [0.0, 0.0, pytest.approx(1.0)]
    assert limiter.try_acquire(b) == 0.0  # a's exhaustion does not touch b
    faster = Tenant("a", "A", rate_per_s=4.0, burst=8, max_active_runs=1, disabled=False)
    assert limiter.try_acquire(faster) == pytest.approx(0.25)
    now[0] += 1.0
    assert [limiter.try_acquire(faster) for _ in range(4)] == [0.0] * 4
