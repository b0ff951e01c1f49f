"""GET /v1/memory and GET /v1/memory/export through the gateway in-process (httpx.ASGITransport)
and the SDK: files written by the real memory write path into the real local blob store, listed
and exported for the key's tenant only; the scopes; a damaged blob named in `errors`; the export's
byte cap; answers conforming to the generated document. No broker: the index gets the records
as the tool executor applies its own writes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from jsonschema import Draft202012Validator

from agentstream.blobs.local import LocalBlobStore
from agentstream.client import RunsClient
from agentstream.client.http import ApiError
from agentstream.client.journal import JournalClient
from agentstream.config import Settings
from agentstream.contract.openapi import openapi_document
from agentstream.events import MemoryFileSet
from agentstream.gateway.app import Caller, Gateway
from agentstream.gateway.memory_api import MemoryApi
from agentstream.gateway.projection import RunIndex
from agentstream.memory.files import Caps, MemoryFiles
from agentstream.memory.index import MemoryIndex
from agentstream.settings import BlobSettings, load
from agentstream.tenancy.directory import ApiKey, Principal, Tenant
from agentstream.tenancy.scopes import MEMORY_READ, RUNS_READ
from tests.unit import test_read_result

# A tmp home (no broker) and its local blob store, shared with the read_result tests.
settings, store = test_read_result.settings, test_read_result.store

ACME_EXPORT, ACME_DEFAULT, GLOBEX_EXPORT = "key-acme-export", "key-acme-default", "key-globex-export"
CAPS = Caps(max_file_bytes=4096, max_tenant_bytes=8192, max_files=20)


class Keys:
    def __init__(self) -> None:
        acme, globex = (Tenant(t, t, 100.0, 100, 10, False) for t in ("acme", "globex"))
        self.callers = {
            f"Bearer {ACME_EXPORT}": Principal(acme, ApiKey("k1", "acme", "ops", 1, False, (RUNS_READ, MEMORY_READ))),
            # Issued without scopes: the defaults (runs:read, runs:write, tools:write), no memory:read.
            f"Bearer {ACME_DEFAULT}": Principal(acme, ApiKey("k2", "acme", "app", 1, False)),
            f"Bearer {GLOBEX_EXPORT}": Principal(
                globex, ApiKey("k3", "globex", "ops", 1, False, (RUNS_READ, MEMORY_READ))
            ),
        }

    def authenticate(self, authorization: str | None) -> Principal | None:
        return self.callers.get(authorization or "")

    async def authenticate_fresh(self, authorization: str | None) -> Principal | None:
        return self.authenticate(authorization)


class NoLimit:
    def retry_after(self, caller: Caller) -> float:
        return 0.0


@dataclass
class Rig:
    files: MemoryFiles
    memory: MemoryApi
    transport: httpx.ASGITransport

    def sdk(self, key: str) -> RunsClient:
        return RunsClient("http://gateway", key, transport=self.transport)

    async def get(self, url: str, key: str, params: dict[str, str] | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(transport=self.transport, base_url="http://gateway", headers=headers) as c:
            return await c.get(url, params=params)


@pytest.fixture
async def rig(settings: Settings, store: LocalBlobStore) -> AsyncIterator[Rig]:
    index = MemoryIndex(settings)

    async def publish(_event: MemoryFileSet) -> None:
        pass  # the writer applies its own record to `index`; the broker's part is tests/integration

    files = MemoryFiles(index, lambda: store, publish, CAPS, lambda: 1_700_000_000_000)
    memory = MemoryApi(settings, index, lambda: store, max_bytes=CAPS.max_tenant_bytes)
    gateway = Gateway(RunIndex(settings), JournalClient(settings, writer="gateway"), Keys(), NoLimit(), memory=memory)
    await files.write("acme", "/memories/notes.md", "acme prefers email\n", "run_a1")
    await files.write("acme", "/memories/notes.md", "acme prefers phone\n", "run_a2")
    await files.write("acme", "/memories/customers/dana.md", "dana: VIP", "run_a2")
    await files.write("globex", "/memories/plan.md", "globex only", "run_g1")
    yield Rig(files, memory, httpx.ASGITransport(app=gateway.app()))


def conforms(response: httpx.Response, path: str) -> None:
    document = openapi_document()
    answer = document["paths"][path]["get"]["responses"][str(response.status_code)]
    ref = answer["content"]["application/json"]["schema"]["$ref"]
    validator = Draft202012Validator({"$ref": ref, "components": document["components"]})
    assert not list(validator.iter_errors(response.json())), response.text


async def test_a_key_lists_and_exports_its_own_tenants_memory_only(rig: Rig) -> None:
    listed = await rig.get("/v1/memory", ACME_DEFAULT)  # runs:read is enough to list
    assert listed.status_code == 200, listed.text
    conforms(listed, "/v1/memory")
    assert listed.json()["data"] == [
        {"path": "/memories/customers/dana.md", "size": 9, "version": 1, "updated_ms": 1_700_000_000_000},
        {"path": "/memories/notes.md", "size": 19, "version": 2, "updated_ms": 1_700_000_000_000},
    ]
    assert "acme prefers" not in listed.text  # no contents in the listing

    exported = await rig.sdk(ACME_EXPORT).export_memory()
    assert exported.files == {"/memories/customers/dana.md": "dana: VIP", "/memories/notes.md": "acme prefers phone\n"}
    assert (exported.errors, exported.truncated, exported.max_bytes) == ({}, False, CAPS.max_tenant_bytes)
    assert [f.path for f in await rig.sdk(ACME_EXPORT).memory()] == [
        "/memories/customers/dana.md", "/memories/notes.md"
    ]  # fmt: skip

    globex = await rig.get("/v1/memory/export", GLOBEX_EXPORT)
    conforms(globex, "/v1/memory/export")
    assert globex.json()["files"] == {"/memories/plan.md": "globex only"} and "acme" not in globex.text


async def test_no_parameter_names_another_tenant_and_export_needs_its_scope(rig: Rig) -> None:
    # The tenant is the key's: a tenant (or any) parameter is refused, never followed.
    for params in ({"tenant": "acme"}, {"tenant_id": "acme"}, {"path": "/memories/notes.md"}):
        r = await rig.get("/v1/memory/export", GLOBEX_EXPORT, params)
        assert (r.status_code, r.json()["error"]["type"]) == (400, "invalid_parameter"), r.text
        r = await rig.get("/v1/memory", GLOBEX_EXPORT, params)
        assert (r.status_code, r.json()["error"]["field"]) == (400, next(iter(params))), r.text
    for path in ("/v1/memory/acme", "/v1/memory/export/acme", "/v1/memory/export/../acme"):
        assert (await rig.get(path, GLOBEX_EXPORT)).status_code in (404, 405), path
    refused = await rig.get("/v1/memory/export", ACME_DEFAULT)  # default scopes: no memory:read
    conforms(refused, "/v1/memory/export")
    assert refused.status_code == 403 and "memory:read" in refused.json()["error"]["message"]
    with pytest.raises(ApiError) as raised:
        await rig.sdk(ACME_DEFAULT).export_memory()
    assert raised.value.status == 403


async def test_a_damaged_or_missing_blob_is_named_in_errors_never_empty(
    rig: Rig, settings: Settings, store: LocalBlobStore
) -> None:
    def blob_file(path: str) -> Path:
        blob = rig.files.index.files("acme")[path].blob
        return load(BlobSettings).resolved_dir(settings.home) / "acme" / "memory" / blob.split("/")[3]

    damaged = blob_file("/memories/notes.md")
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"\x00")
    blob_file("/memories/customers/dana.md").unlink()
    exported = await rig.sdk(ACME_EXPORT).export_memory()
    assert exported.files == {}
    assert "failed verification" in exported.errors["/memories/notes.md"]
    assert "missing" in exported.errors["/memories/customers/dana.md"]


async def test_the_export_is_capped_at_the_tenants_memory_cap(rig: Rig) -> None:
    # A cap lowered after the files were written: the export stops there and names what it left out.
    rig.memory.max_bytes = 12
    exported = await rig.sdk(ACME_EXPORT).export_memory()
    assert exported.files == {"/memories/customers/dana.md": "dana: VIP"}
    assert exported.truncated and exported.max_bytes == 12
    assert "capped at 12 bytes" in exported.errors["/memories/notes.md"]


async def test_a_gateway_without_memory_answers_404(settings: Settings) -> None:
    gateway = Gateway(RunIndex(settings), JournalClient(settings, writer="gateway"), Keys(), NoLimit())
    transport = httpx.ASGITransport(app=gateway.app())
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
        r = await c.get("/v1/memory", headers={"Authorization": f"Bearer {ACME_DEFAULT}"})
    assert (r.status_code, r.json()["error"]["type"]) == (404, "not_found")
