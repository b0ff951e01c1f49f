"""Typed credential errors.

Every message here is written to be logged and shown: it may name a tenant, a secret or a tool,
never a secret's value, a key or a delegation token. Callers rely on that to log them as they are.
"""

from __future__ import annotations


class CredentialError(Exception):
    """Base of every refusal or failure of the credential broker."""


class KeyUnavailable(CredentialError):
    """A master key id the key provider does not hold (deleted, or from another deployment)."""


class DecryptionFailed(CredentialError):
    """A sealed secret did not authenticate: tampered, moved to another tenant or name, or wrong key."""


class SecretAdminError(CredentialError):
    """A user error in secret administration (bad name, unknown tenant or secret), fit to show as is."""


class DelegationInvalid(CredentialError):
    """A malformed or forged token, or one presented by another tool, run or call than it names."""


class DelegationExpired(CredentialError):
    """A token presented after its expiry."""


class DelegationReused(CredentialError):
    """A single-use token presented a second time."""


class SecretNotGranted(CredentialError):
    """A named secret that does not exist for the tenant, is not allowed for the tool, or needs
    scopes the delegation does not carry."""
