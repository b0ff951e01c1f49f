"""Issue 13, finding 8: keys split by purpose, handed out per process, rotated with a retirement
window; key files others can read refuse to start; the default home is a fixed per-user place.

The gateway's key material (its bundle, what the gateway process reads) cannot mint a capability
the executor accepts or a delegation the credential broker redeems; a rotated-out key's signatures
verify inside the retirement window and are refused after it (capabilities, approvals,
delegations and journal records alike); a master or bundle file readable by others stops the
process that would load it; and the default home does not move with the working directory.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from agentstream.config import ModelSettings, Settings
from agentstream.credentials.delegation import verify
from agentstream.credentials.errors import CredentialError, DelegationInvalid
from agentstream.credentials.keys import LocalKeyProvider
from agentstream.credentials.signing_keys import (
    NEEDS,
    SigningRoots,
    bundle_path,
    component_keyring,
    ensure_key_bundles,
    roots_path,
    rotate_signing_keys,
)
from agentstream.events import ToolCallAuthorized
from agentstream.security.signing import Signer, capability_verifies, platform_signers, sign_capability
from bench.attacks import key_separation as attacks

NOW = int(time.time() * 1000)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Only the key files matter here: no broker."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    s = Settings("127.0.0.1:1", "ks", home, ModelSettings(), kafka_extra={})
    ensure_key_bundles(s)
    return s


async def test_the_gateways_keys_mint_no_capability_and_no_delegation(settings: Settings) -> None:
    assert not await attacks.gateway_mints_capability(settings)
    assert not await attacks.gateway_mints_delegation(settings)
    gateway = platform_signers(settings, "gateway")
    with pytest.raises(CredentialError, match="holds no capability key"):
        _ = gateway.capability
    with pytest.raises(CredentialError, match="holds no delegation key"):
        _ = gateway.delegation
    assert (
        gateway.keyring.purposes == NEEDS["gateway"] == {"approval", "run-request", "journal/gateway", "journal-view"}
    )
    # Nor is there anything else to read: the bundle holds only those keys, never a root.
    text = bundle_path(settings, "gateway").read_text()
    assert "capability" not in text and "delegation" not in text and "roots" not in text
    # The encryption keys are not in any bundle, and the signing roots are not in master.json.
    master = LocalKeyProvider(settings.home / "keys" / "master.json")
    assert "signing" not in master.path.read_text()
    assert all("mk-" not in bundle_path(settings, c).read_text() for c in NEEDS)


async def test_a_rotated_out_key_verifies_inside_its_window_and_is_refused_after(settings: Settings) -> None:
    executor = platform_signers(settings, "tool-executor").capability
    old = platform_signers(settings).capability  # signed before the rotation
    event = ToolCallAuthorized("e", "r", "t", 1, "c", "x", "transfer_funds", "1", "{}", "c", 1000, "policy",
                               NOW + 60_000, "", "")  # fmt: skip
    signed_old = replace(event, capability=sign_capability(old, event))
    old_kid = signed_old.capability.split(":")[0]
    rotate_signing_keys(settings, retire_after_s=3600)
    # New signatures name the new key; old ones still verify within the window...
    fresh = platform_signers(settings).capability
    signed_new = replace(event, capability=sign_capability(fresh, event))
    assert signed_new.capability.split(":")[0] != old_kid
    reloaded = platform_signers(settings, "tool-executor").capability  # a process started after it
    assert capability_verifies(reloaded, signed_old) and capability_verifies(reloaded, signed_new)
    # ...and not after it (judged at a time past the retirement).
    later = int(time.time() * 1000) + 3_601_000
    assert not reloaded.verify(signed_old.capability, *_fields(signed_old), now_ms=later)
    assert reloaded.verify(signed_new.capability, *_fields(signed_new), now_ms=later)
    # A process that loaded its bundle before the rotation picks the change up from the file.
    assert executor.verify(signed_new.capability, *_fields(signed_new))
    # Delegations carry the key id too.
    issued = attacks.delegation_signed_before_rotation(settings)
    rotate_signing_keys(settings, retire_after_s=60)
    ring = component_keyring(settings, "tool-executor")
    assert verify(ring, issued, NOW + 30_000).tenant_id == "acme"
    with pytest.raises(DelegationInvalid):
        verify(ring, issued, int(time.time() * 1000) + 61_000)


def _fields(event: ToolCallAuthorized) -> tuple[str, ...]:
    from agentstream.security.signing import _capability_fields

    return _capability_fields(event)


async def test_loose_permissions_refuse_to_start(settings: Settings) -> None:
    assert not await attacks.loose_permissions_accepted(settings)
    for path in (roots_path(settings), bundle_path(settings, "gateway"), settings.home / "keys" / "master.json"):
        LocalKeyProvider(settings.home / "keys" / "master.json")  # exists
        os.chmod(path, 0o644)
        with pytest.raises(CredentialError, match="accessible by others"):
            if path == roots_path(settings):
                SigningRoots(path)
            elif path.name == "master.json":
                LocalKeyProvider(path)
            else:
                component_keyring(settings, "gateway")
        os.chmod(path, 0o600)
    os.chmod(settings.home / "keys", 0o755)
    with pytest.raises(CredentialError, match="accessible by others"):
        component_keyring(settings, "gateway")


async def test_the_default_home_does_not_follow_the_working_directory(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("AGENTSTREAM_HOME", "XDG_DATA_HOME")}
    env["HOME"] = str(tmp_path / "user")
    code = "from agentstream.config import Settings; print(Settings.from_env().home)"
    homes = set()
    for cwd in (tmp_path / "a", tmp_path / "b"):
        cwd.mkdir()
        out = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", code], cwd=cwd, env=env,
                                      capture_output=True, text=True, check=True)  # fmt: skip
        homes.add(out.stdout.strip())
    assert homes == {str(tmp_path / "user" / ".local" / "share" / "agentstream")}
    assert not await attacks.home_follows_cwd(tmp_path)


def test_a_bundle_holds_no_more_than_its_component_needs(settings: Settings) -> None:
    for component, purposes in NEEDS.items():
        assert component_keyring(settings, component).purposes == purposes
    # Only the policy gate and the executor hold the keys that release side effects.
    holders = {c for c, p in NEEDS.items() if {"capability", "delegation"} & p}
    assert holders == {"policy-gate", "tool-executor"}
    assert {c for c, p in NEEDS.items() if "run-request" in p} == {"gateway", "orchestrator"}
    # A key from another purpose never verifies: the gateway's approval key is no capability key.
    approval = platform_signers(settings, "gateway").approval
    capability = platform_signers(settings, "tool-executor").capability
    assert not capability.verify(approval.sign("capability/v2", "x"), "capability/v2", "x")
    assert isinstance(Signer(b"k" * 32).sign("a"), str)


async def test_a_retired_key_is_refused_once_its_window_passed(settings: Settings) -> None:
    assert not await attacks.retired_capability_accepted(settings)
