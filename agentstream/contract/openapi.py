"""The OpenAPI document of the run API, generated from the contract's models and operation table.

    python -m agentstream.contract.openapi > docs/openapi.json

prints the document a gateway with the default settings serves at `/openapi.json`; the checked-in
copy is compared with it by tests/unit/test_gateway_contract.py.
"""

from __future__ import annotations

import copy
import sys
from functools import lru_cache
from typing import Any

import orjson
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from agentstream.contract.queries import DEFAULT_MAX_WAIT_S
from agentstream.contract.resources import Error, RunEventData
from agentstream.contract.routes import OPERATIONS, Operation

REF = "#/components/schemas/{model}"
_SECURITY = {
    "apiKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "an API key (`agentstream keys issue`) with the scope the operation needs: "
        "runs:read (reading runs, costs, approvals, tools), runs:write (creating, cancelling, "
        "resuming runs), approvals:decide (deciding an approval), tools:write (registering and "
        "switching the tenant's tools), audit:read (audit queries), memory:read (exporting the "
        "contents of the tenant's memory); admin implies all. Keys issued without scopes have "
        "runs:read, runs:write and tools:write.",
    }
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before retrying",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}
# Extra headers some error answers always carry.
_ERROR_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "the scheme to authenticate with",
            "required": True,
            "schema": {"type": "string", "const": "Bearer"},
        }
    },
    429: _RETRY_AFTER,
    503: _RETRY_AFTER,
}
_ERROR_DESCRIPTIONS = {
    400: "a malformed parameter, header or body; `error.field` names it",
    401: "no valid API key (`Authorization: Bearer <key>`)",
    403: "the API key lacks the scope this operation needs (`error.type` missing_scope; the message names "
    "the scope), or the operation is not this key's to make: a platform tool (switched by operators), "
    "or an approval of a run this key created (`self_approval`)",
    404: "no such run for this tenant (another tenant's run answers the same)",
    409: "conflicts with the run's state or the Idempotency-Key's earlier request",
    413: "the body is larger than the limit (1 MiB)",
    422: "the body is JSON but not a valid request; `error.field` names the offending field",
    429: "the tenant's request rate or active-run quota is exhausted",
    503: "the platform is saturated, the new run is not visible yet, or a store the answer reads "
    "(the audit warehouse, the blob store) cannot be reached",
}
_LOCATION = {"Location": {"description": "the run's URL", "required": True, "schema": {"type": "string"}}}


def _models() -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    """Every model the document names: request bodies and queries as validated, answers as serialized."""
    # RunEventData is the schema of an event message's `data` (a JSON string), so it is named here.
    found: dict[type[BaseModel], JsonSchemaMode] = {Error: "serialization", RunEventData: "serialization"}
    for op in OPERATIONS:
        for model in (op.body, op.query):
            if model is not None:
                found[model] = "validation"
        for answer in op.answers.values():
            found[answer.body] = "serialization"
    return list(found.items())


def _content(model: type[BaseModel], media_type: str = "application/json") -> dict[str, Any]:
    return {media_type: {"schema": {"$ref": REF.format(model=model.__name__)}}}


def _parameters(op: Operation, components: dict[str, Any], max_wait_s: float) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for name in op.path_params
    ]
    for header in op.headers:
        params.append({
            "name": header.name, "in": "header", "required": header.required, "description": header.description,
            "schema": {"type": "string", "pattern": header.pattern},
        })  # fmt: skip
    if op.query is not None:
        # A query model is documented as its fields, one parameter each, not as a component.
        schema = components.pop(op.query.__name__)
        for name, prop in schema["properties"].items():
            prop = copy.deepcopy(prop)
            description = prop.pop("description", None)
            prop.pop("title", None)
            if "anyOf" in prop:  # `X | None = None`: an absent parameter, never a null one
                prop.update(next(v for v in prop.pop("anyOf") if v.get("type") != "null"))
                prop.pop("default", None)
            if name == "wait":
                prop["maximum"] = max_wait_s  # the gateway's own limit (GatewayConfig.max_wait_s)
            param = {"name": name, "in": "query", "required": False, "schema": prop}
            if description:
                param["description"] = description
            params.append(param)
    return params


def _responses(op: Operation) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status, answer in sorted(op.answers.items()):
        media = "text/event-stream" if op.stream else "application/json"
        out[str(status)] = {"description": answer.description, "content": _content(answer.body, media)}
        if answer.location:
            out[str(status)]["headers"] = _LOCATION
    # Every operation that needs a key needs a scope of it, so every one may answer 403.
    codes = sorted({*op.errors, 403}) if op.scope is not None else sorted(op.errors)
    for code in codes:
        out[str(code)] = {"description": _ERROR_DESCRIPTIONS[code], "content": _content(Error)}
        if code in _ERROR_HEADERS:
            out[str(code)]["headers"] = _ERROR_HEADERS[code]
    return out


@lru_cache(maxsize=8)
def _document(max_wait_s: float) -> bytes:
    _, top = models_json_schema(_models(), ref_template=REF)
    components: dict[str, Any] = dict(sorted(top.get("$defs", {}).items()))
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        item: dict[str, Any] = {"operationId": op.operation_id}
        if params := _parameters(op, components, max_wait_s):
            item["parameters"] = params
        if op.body is not None:
            item["requestBody"] = {"required": op.body_required, "content": _content(op.body)}
        item["responses"] = _responses(op)
        if op.scope is None:
            item["security"] = []
        paths.setdefault(op.path, {})[op.method.lower()] = item
    document = {
        "openapi": "3.1.0",
        "info": {"title": "agentstream run API", "version": "1"},
        "components": {"securitySchemes": _SECURITY, "schemas": components},
        "security": [{"apiKey": []}],
        "paths": paths,
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


def openapi_json(max_wait_s: float = DEFAULT_MAX_WAIT_S) -> bytes:
    """The document, encoded, for a gateway whose `wait` may be up to `max_wait_s` seconds."""
    return _document(max_wait_s)


def openapi_document(max_wait_s: float = DEFAULT_MAX_WAIT_S) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads(_document(max_wait_s))
    return document


def main() -> None:
    sys.stdout.buffer.write(openapi_json())


if __name__ == "__main__":
    main()
