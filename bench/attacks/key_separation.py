"""Key separation and rotation (issue 13, finding 8). Each attack returns True when it SUCCEEDED.

They work on a deployment's home (`settings.home`, key bundles issued), not on a running stack:
what is attacked is which key material each process holds and how long a key is believed.

* `gateway_mints_capability`: with every key in the gateway's bundle (what the internet-facing
  process reads), sign a capability; it succeeds if the tool executor's keys accept one.
* `gateway_mints_delegation`: the same for a credential delegation and the executor's broker.
* `retired_capability_accepted`: a capability signed before a rotation whose window has passed.
* `loose_permissions_accepted`: a key bundle readable by others is loaded anyway.
* `home_follows_cwd`: the default home (no AGENTSTREAM_HOME) differs between two working directories.

Nothing switches these defenses off; a pre-split deployment (one master.json for everything, the
home under the working directory) is the control.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from agentstream.config import Settings
from agentstream.credentials.delegation import DelegationIssuer, verify
from agentstream.credentials.errors import CredentialError, DelegationInvalid
from agentstream.credentials.signing_keys import (
    bundle_path,
    component_keyring,
    load_keyring,
    rotate_signing_keys,
)
from agentstream.events import ToolCallAuthorized
from agentstream.security.signing import Signer, capability_verifies, platform_signers, sign_capability


def _authorization(expires_ms: int) -> ToolCallAuthorized:
    return ToolCallAuthorized("e", "run-1", "acme", 1, "call-1", "c0", "transfer_funds", "1", "{}", "call-1", 1000,
                              "policy", expires_ms, "", "")  # fmt: skip


def _gateway_keys(settings: Settings) -> list[tuple[str, bytes]]:
    ring = load_keyring(bundle_path(settings, "gateway"))
    return [(k.kid, k.key) for p in ring.purposes for k in ring._keys[p].values()]


async def gateway_mints_capability(settings: Settings) -> bool:
    executor = platform_signers(settings, "tool-executor").capability
    event = _authorization(int(time.time() * 1000) + 60_000)
    for kid, key in _gateway_keys(settings):
        if capability_verifies(executor, replace(event, capability=sign_capability(Signer(key, kid), event))):
            return True
    return False


async def gateway_mints_delegation(settings: Settings) -> bool:
    executor = component_keyring(settings, "tool-executor")
    for _kid, key in _gateway_keys(settings):
        token = DelegationIssuer(key).issue("acme", "run-1", "call-1", "sql", [], ["db"], int(time.time() * 1000))
        # The raw key signs as key id "k0"; try it under every key id the executor knows, too.
        try:
            verify(executor, token)
            return True
        except DelegationInvalid:
            continue
    return False


def delegation_signed_before_rotation(settings: Settings) -> str:
    issuer = DelegationIssuer(component_keyring(settings, "policy-gate"))
    return issuer.issue("acme", "run-1", "call-1", "sql", [], ["db"], int(time.time() * 1000))


async def retired_capability_accepted(settings: Settings) -> bool:
    event = _authorization(int(time.time() * 1000) + 600_000)
    signed = replace(event, capability=sign_capability(platform_signers(settings, "policy-gate").capability, event))
    rotate_signing_keys(settings, retire_after_s=0.5)
    inside = capability_verifies(platform_signers(settings, "tool-executor").capability, signed)
    await asyncio.sleep(0.6)
    after = capability_verifies(platform_signers(settings, "tool-executor").capability, signed)
    if not inside:
        raise AssertionError("a key inside its retirement window must still verify")
    return after


async def loose_permissions_accepted(settings: Settings) -> bool:
    path = bundle_path(settings, "gateway")
    os.chmod(path, 0o644)
    try:
        component_keyring(settings, "gateway")
        return True
    except CredentialError:
        return False
    finally:
        os.chmod(path, 0o600)


async def home_follows_cwd(scratch: Path) -> bool:
    env = {k: v for k, v in os.environ.items() if k not in ("AGENTSTREAM_HOME", "XDG_DATA_HOME")}
    env["HOME"] = str(scratch / "user")
    code = "from agentstream.config import Settings; print(Settings.from_env().home)"
    homes = set()
    for name in ("cwd-a", "cwd-b"):
        cwd = scratch / name
        cwd.mkdir(exist_ok=True)
        out = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", code], cwd=cwd, env=env,
                                      capture_output=True, text=True, check=True)  # fmt: skip
        homes.add(out.stdout.strip())
    return len(homes) > 1
