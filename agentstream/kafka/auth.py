"""Kafka principals: one SASL/SCRAM user per platform component, its password generated once and
kept in a 0600 file under the platform home, never logged and never put in an error message.

The local broker authenticates every client (SCRAM-SHA-512) and authorizes every request against
ACLs generated from topics.yaml (`agentstream.kafka.acls`). Each spawned process is handed only
the path of its own principal's file (AGENTSTREAM_KAFKA_SASL_FILE); sandboxed tools get nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from agentstream.processors.catalog import CORES

MECHANISM = "SCRAM-SHA-512"
# Kafka's default and minimum: the cost is paid once per connection, never per record.
SCRAM_ITERATIONS = 4096
# The platform admin: the CLI, `topics create`, the dev/demo driver. The broker's only super user
# a client can authenticate as.
ADMIN = "admin-cli"
# The broker's own identity on its controller listener and for inter-broker requests.
BROKER = "kafka-broker"
PROCESSORS = CORES  # one principal per processor core of the registry
# Every processor core in one process (`agentstream process engine`): one principal, granted the
# union of what its cores are granted.
ENGINE = "engine"
# The Kafka Connect worker that feeds the audit warehouse (agentstream/connect): its own topics, its
# groups and transactional ids under `<prefix>.connect`, and read access to the topics it sinks.
CONNECT = "connect"
COMPONENTS = (*PROCESSORS, ENGINE, "gateway", CONNECT, ADMIN)
# A process's own credentials file (set by whoever spawns it; read by Settings.from_env).
SASL_FILE_ENV = "AGENTSTREAM_KAFKA_SASL_FILE"
# Where a spawner finds the per-component files; removed from the environment before any spawn.
CREDENTIALS_DIR_ENV = "AGENTSTREAM_KAFKA_CREDENTIALS_DIR"


class KafkaAuthError(RuntimeError):
    """A credentials file is missing, unreadable or malformed, or the broker refused a user change."""


@dataclass(frozen=True)
class Principal:
    username: str
    password: str = field(repr=False)
    mechanism: str = MECHANISM

    def client_config(self, protocol: str = "SASL_PLAINTEXT") -> dict[str, str]:
        """librdkafka settings that authenticate as this principal."""
        return {
            "security.protocol": protocol,
            "sasl.mechanism": self.mechanism,
            "sasl.username": self.username,
            "sasl.password": self.password,
        }


def read_principal(path: Path) -> Principal:
    try:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise KafkaAuthError(f"Kafka credentials file {path} is readable by others (mode {mode:o}); chmod 600 it")
        doc = orjson.loads(path.read_bytes())
        return Principal(str(doc["username"]), str(doc["password"]), str(doc.get("mechanism", MECHANISM)))
    except KafkaAuthError:
        raise
    except FileNotFoundError as exc:
        raise KafkaAuthError(f"Kafka credentials file {path} does not exist") from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        # The exception's text could quote the file; only its type is named.
        raise KafkaAuthError(f"Kafka credentials file {path} is unreadable ({type(exc).__name__})") from None


def _private_dirs(directory: Path) -> None:
    """Creates `directory` and any missing parent 0700 (mkdir's mode covers only the last one):
    `<home>/keys` is shared with the platform's other keys, which refuse a looser directory."""
    missing = [d for d in (directory, *directory.parents) if not d.exists()]
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir(mode=0o700)


def _write_private(path: Path, data: bytes) -> None:
    _private_dirs(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o600)
        # A concurrent first start may have written it meanwhile: the first file wins, so every
        # process ends up with the password the broker was given.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        os.unlink(tmp)


class CredentialStore:
    """One file per principal in a 0700 directory: `<dir>/<username>.json`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, username: str) -> Path:
        return self.directory / f"{username}.json"

    def get(self, username: str) -> Principal | None:
        path = self.path(username)
        return read_principal(path) if path.exists() else None

    def ensure(self, username: str) -> Principal:
        """The principal's credentials, generated (32 random bytes) if this is its first start."""
        existing = self.get(username)
        if existing is not None:
            return existing
        password = secrets.token_urlsafe(32)
        doc = {"username": username, "password": password, "mechanism": MECHANISM}
        _write_private(self.path(username), orjson.dumps(doc))
        return read_principal(self.path(username))

    def ensure_all(self, usernames: Iterable[str] = COMPONENTS) -> list[Principal]:
        return [self.ensure(u) for u in usernames]


def _upsert_sync(bootstrap: str, admin_extra: Mapping[str, str], principals: list[Principal]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": "0", **admin_extra})
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
    upserts: list[Any] = [UserScramCredentialUpsertion(p.username, info, p.password.encode()) for p in principals]
    for user, fut in admin.alter_user_scram_credentials(upserts, request_timeout=30).items():
        try:
            fut.result()
        except Exception as exc:  # KafkaException: the broker's reason names no password
            raise KafkaAuthError(f"the broker refused the SCRAM credentials of {user}: {exc}") from None


async def upsert_users(bootstrap: str, admin_extra: Mapping[str, str], principals: list[Principal]) -> None:
    """Creates (or re-sets) each principal's SCRAM-SHA-512 credentials on the broker, as the admin."""
    if principals:
        await asyncio.to_thread(_upsert_sync, bootstrap, admin_extra, principals)


def with_principal(env: Mapping[str, str], component: str) -> dict[str, str]:
    """The environment for one spawned component: its own credentials file, nobody else's, and
    not where the others are."""
    out = dict(env)
    directory = out.pop(CREDENTIALS_DIR_ENV, "")
    if directory:
        out.pop(SASL_FILE_ENV, None)
        path = CredentialStore(Path(directory)).path(component)
        if path.exists():
            out[SASL_FILE_ENV] = str(path)
    return out
