"""Per-tenant credentials for tool calls: secrets envelope-encrypted on the compacted `secrets`
topic, and a broker that releases them only against a signed, call-bound delegation."""

from agentstream.credentials.delegation import (
    DELEGATION_PURPOSE,
    CredentialBroker,
    Delegation,
    DelegationIssuer,
)
from agentstream.credentials.envelope import Sealed, open_sealed, seal, secret_aad
from agentstream.credentials.errors import (
    CredentialError,
    DecryptionFailed,
    DelegationExpired,
    DelegationInvalid,
    DelegationReused,
    KeyUnavailable,
    SecretAdminError,
    SecretNotGranted,
)
from agentstream.credentials.keys import KeyProvider, LocalKeyProvider, local_key_provider
from agentstream.credentials.store import (
    SecretDirectory,
    SecretInfo,
    SecretVault,
    delete_secret,
    list_secrets,
    put_secret,
)
from agentstream.credentials.used import MemoryUsedTokens, RocksUsedTokens, UsedTokens

__all__ = [
    "DELEGATION_PURPOSE",
    "CredentialBroker",
    "CredentialError",
    "DecryptionFailed",
    "Delegation",
    "DelegationExpired",
    "DelegationInvalid",
    "DelegationIssuer",
    "DelegationReused",
    "KeyProvider",
    "KeyUnavailable",
    "LocalKeyProvider",
    "MemoryUsedTokens",
    "RocksUsedTokens",
    "Sealed",
    "SecretAdminError",
    "SecretDirectory",
    "SecretInfo",
    "SecretNotGranted",
    "SecretVault",
    "UsedTokens",
    "delete_secret",
    "list_secrets",
    "local_key_provider",
    "open_sealed",
    "put_secret",
    "seal",
    "secret_aad",
]
