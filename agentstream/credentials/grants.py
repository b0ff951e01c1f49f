"""Secret grants: which tools may receive a tenant secret, by identity, never by name alone.

A grant is one of

* `name` or `_platform/name`: the platform's tool `name`, any version (only the platform's
  operators publish its versions);
* `_platform/name@<digest>`: exactly that contract of the platform's tool;
* `<tenant>/name@<digest>`: exactly that contract of the tenant's own tool. A tenant's tool is
  registered by any of its keys with `tools:write`, so a grant to it always names the contract:
  `<tenant>/name` alone is completed with the digest of its latest version when the secret is
  stored (`agentstream.credentials.store.put_secret`).

A tenant tool named like a platform tool is another owner, so it matches none of the platform
tool's grants: the executor refuses it the secret (`SecretNotGranted`) and does not run it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agentstream.registry.entry import PLATFORM
from agentstream.registry.pins import DIGEST_HEX, ToolIdentity

_GRANT = re.compile(
    r"(?:(?P<owner>_platform|[a-z0-9][a-z0-9-]{1,62})/)?(?P<name>[A-Za-z0-9_.-]{1,64})"
    rf"(?:@(?P<digest>[0-9a-f]{{{DIGEST_HEX}}}))?"
)


class GrantError(ValueError):
    """A grant that does not parse, with a message fit to show as is."""


@dataclass(frozen=True, slots=True)
class Grant:
    owner: str  # "" for the platform
    name: str
    digest: str  # "" for any version (platform tools only, once stored)

    @property
    def text(self) -> str:
        suffix = f"@{self.digest}" if self.digest else ""
        return f"{self.owner or PLATFORM}/{self.name}{suffix}"

    def matches(self, tool: ToolIdentity) -> bool:
        if (self.owner, self.name) != (tool.owner, tool.name):
            return False
        if self.owner and not self.digest:
            return False  # a tenant tool is granted by contract, never "any version" (see above)
        return not self.digest or self.digest == tool.digest


def parse_grant(text: str) -> Grant:
    match = _GRANT.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise GrantError(
            f"invalid tool grant {text!r}: use NAME or _platform/NAME for a platform tool, "
            f"TENANT/NAME[@DIGEST] for the tenant's own tool (DIGEST: {DIGEST_HEX} hex characters)"
        )
    owner = match.group("owner") or PLATFORM
    return Grant("" if owner == PLATFORM else owner, match.group("name"), match.group("digest") or "")


def granted(grants: tuple[str, ...] | list[str], tool: ToolIdentity) -> bool:
    """Whether any of a secret's stored grants names `tool`. A grant that does not parse (written
    by another version) grants nothing."""
    for text in grants:
        try:
            if parse_grant(text).matches(tool):
                return True
        except GrantError:
            continue
    return False
