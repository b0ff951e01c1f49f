"""Tenants and API keys: keys stored only as hashes on the compacted `tenants` topic, an
in-memory directory that authenticates callers, and per-tenant rate limits."""

from agentstream.tenancy.directory import ApiKey, Principal, Tenant, TenantDirectory
from agentstream.tenancy.keys import generate_key, hash_secret, parse_key
from agentstream.tenancy.ratelimit import RateLimiter, TokenBucket

__all__ = [
    "ApiKey",
    "Principal",
    "RateLimiter",
    "Tenant",
    "TenantDirectory",
    "TokenBucket",
    "generate_key",
    "hash_secret",
    "parse_key",
]
