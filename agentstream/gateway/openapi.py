"""The OpenAPI document of the run API, built from the same pydantic models that validate requests."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import BaseModel

from agentstream.gateway.models import (
    CURSOR_PATTERN,
    IDEMPOTENCY_KEY_PATTERN,
    Budget,
    CancelRun,
    CreateRun,
    DecideApproval,
    RegisterTool,
    ResumeRun,
    SwitchTool,
)
from agentstream.gateway.openapi_schemas import (
    APPROVAL_SCHEMA,
    COST_REPORT_SCHEMA,
    ERROR_SCHEMA,
    RUN_COST_SCHEMA,
    RUN_SCHEMA,
    RUN_STATUSES,
    SSE_EVENT_SCHEMA,
    TOOL_SCHEMA,
)

__all__ = ["RUN_STATUSES", "openapi_document"]  # RUN_STATUSES lives with the schemas; app.py imports it here


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
    503: "the platform is saturated, or the new run is not visible yet",
}
_LOCATION = {"Location": {"description": "the run's URL", "required": True, "schema": {"type": "string"}}}


def _component(model: type[BaseModel]) -> dict[str, Any]:
    # Nested models are components of their own, referenced from the document's root.
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return schema


def _json(schema_ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}


def _errors(*codes: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # Every operation needs a scope of its key (runs:read, runs:write, approvals:decide,
    # tools:write; admin implies all), so every one may answer 403.
    for c in sorted({*codes, 403}):
        out[str(c)] = {"description": _ERROR_DESCRIPTIONS[c], "content": _json("Error")}
        if c in _ERROR_HEADERS:
            out[str(c)]["headers"] = _ERROR_HEADERS[c]
    return out


def _created(description: str) -> dict[str, Any]:
    return {"description": description, "headers": _LOCATION, "content": _json("Run")}


_TOOL_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
_APPROVAL_ID = {"name": "approval_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
_RUN_ID = {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
# Every run-scoped operation: an unknown query parameter, authentication, the run, the tenant's rate.
_COMMON = (400, 401, 404, 429)


@lru_cache(maxsize=8)
def openapi_document(max_wait_s: float = 60.0) -> dict[str, Any]:
    """The document for a gateway whose `wait` may be up to `max_wait_s` seconds."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "agentstream run API", "version": "1"},
        "components": {
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an API key (`agentstream keys issue`) with the scope the operation needs: "
                    "runs:read (reading runs, costs, approvals, tools), runs:write (creating, cancelling, "
                    "resuming runs), approvals:decide (deciding an approval), tools:write (registering and "
                    "switching the tenant's tools); admin implies all. Keys issued without scopes have "
                    "runs:read, runs:write and tools:write.",
                }
            },
            "schemas": {
                "Error": ERROR_SCHEMA,
                "Run": RUN_SCHEMA,
                "Approval": APPROVAL_SCHEMA,
                "ApprovalPage": {
                    "type": "object",
                    "required": ["data"],
                    "properties": {"data": {"type": "array", "items": {"$ref": "#/components/schemas/Approval"}}},
                },
                "DecideApproval": DecideApproval.model_json_schema(),
                "Tool": TOOL_SCHEMA,
                "ToolPage": {
                    "type": "object",
                    "required": ["data"],
                    "properties": {"data": {"type": "array", "items": {"$ref": "#/components/schemas/Tool"}}},
                },
                "RegisterTool": RegisterTool.model_json_schema(),
                "SwitchTool": SwitchTool.model_json_schema(),
                "RunPage": {
                    "type": "object",
                    "required": ["data", "next_cursor"],
                    "properties": {
                        "data": {"type": "array", "items": {"$ref": "#/components/schemas/Run"}},
                        "next_cursor": {"type": ["string", "null"]},
                    },
                },
                "RunEvent": SSE_EVENT_SCHEMA,
                "CreateRun": _component(CreateRun),
                "Budget": _component(Budget),
                "RunCost": RUN_COST_SCHEMA,
                "CostReport": COST_REPORT_SCHEMA,
                "CancelRun": CancelRun.model_json_schema(),
                "ResumeRun": _component(ResumeRun),
            },
        },
        "security": [{"apiKey": []}],
        "paths": {
            "/v1/runs": {
                "post": {
                    "operationId": "createRun",
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": True,
                            "description": "1-200 printable ASCII characters; the same key and body name the same run",
                            "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
                        },
                        {
                            "name": "wait",
                            "in": "query",
                            "required": False,
                            "description": "seconds to wait for the run to end",
                            "schema": {"type": "number", "minimum": 0, "maximum": max_wait_s},
                        },
                    ],
                    "requestBody": {"required": True, "content": _json("CreateRun")},
                    "responses": {
                        "200": _created("the run this key already created"),
                        "201": _created("created"),
                        "202": _created("created or found; still running after `wait`"),
                        **_errors(400, 401, 409, 413, 422, 429, 503),
                    },
                },
                "get": {
                    "operationId": "listRuns",
                    "parameters": [
                        {
                            "name": "status",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "enum": RUN_STATUSES},
                        },
                        {
                            "name": "cursor",
                            "in": "query",
                            "required": False,
                            "description": "opaque: the `next_cursor` of the previous page",
                            "schema": {"type": "string", "pattern": CURSOR_PATTERN},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 500},
                        },
                    ],
                    "responses": {
                        "200": {"description": "a page of runs", "content": _json("RunPage")},
                        **_errors(400, 401, 429),
                    },
                },
            },
            "/v1/runs/{run_id}": {
                "get": {
                    "operationId": "getRun",
                    "parameters": [_RUN_ID],
                    "responses": {"200": {"description": "the run", "content": _json("Run")}, **_errors(*_COMMON)},
                }
            },
            "/v1/runs/{run_id}/cancel": {
                "post": {
                    "operationId": "cancelRun",
                    "parameters": [_RUN_ID],
                    "requestBody": {"required": False, "content": _json("CancelRun")},
                    "responses": {
                        "202": {"description": "cancel journaled", "content": _json("Run")},
                        **_errors(*_COMMON, 409, 413, 422),
                    },
                }
            },
            "/v1/runs/{run_id}/cost": {
                "get": {
                    "operationId": "getRunCost",
                    "parameters": [_RUN_ID],
                    "responses": {
                        "200": {"description": "what the run has cost so far", "content": _json("RunCost")},
                        **_errors(*_COMMON),
                    },
                }
            },
            "/v1/costs": {
                "get": {
                    "operationId": "listCosts",
                    "parameters": [
                        {
                            "name": "group_by",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "enum": ["run", "tool", "model"], "default": "run"},
                        },
                        {
                            "name": "since_ms",
                            "in": "query",
                            "required": False,
                            "description": "only runs created at or after this time (ms since the epoch)",
                            "schema": {"type": "integer", "minimum": 0, "maximum": 10**15},
                        },
                    ],
                    "responses": {
                        "200": {"description": "the tenant's spend, grouped", "content": _json("CostReport")},
                        **_errors(400, 401, 429),
                    },
                }
            },
            "/v1/runs/{run_id}/resume": {
                "post": {
                    "operationId": "resumeRun",
                    "parameters": [_RUN_ID],
                    "requestBody": {"required": False, "content": _json("ResumeRun")},
                    "responses": {
                        "202": {"description": "resume journaled", "content": _json("Run")},
                        **_errors(*_COMMON, 409, 413, 422, 503),
                    },
                }
            },
            "/v1/tools": {
                "get": {
                    "operationId": "listTools",
                    "responses": {
                        "200": {"description": "the tools this tenant sees", "content": _json("ToolPage")},
                        **_errors(400, 401, 429),
                    },
                },
                "post": {
                    "operationId": "registerTool",
                    "requestBody": {"required": True, "content": _json("RegisterTool")},
                    "responses": {
                        "201": {"description": "the registered (or unchanged) version", "content": _json("Tool")},
                        **_errors(400, 401, 413, 422, 429),
                    },
                },
            },
            "/v1/tools/{name}": {
                "get": {
                    "operationId": "getTool",
                    "parameters": [_TOOL_NAME],
                    "responses": {"200": {"description": "the tool", "content": _json("Tool")}, **_errors(*_COMMON)},
                }
            },
            **{
                f"/v1/tools/{{name}}/{verb}": {
                    "post": {
                        "operationId": f"{verb}Tool",
                        "parameters": [_TOOL_NAME],
                        "requestBody": {"required": False, "content": _json("SwitchTool")},
                        "responses": {
                            "202": {"description": f"{verb}d in every run", "content": _json("Tool")},
                            **_errors(*_COMMON, 403, 413, 422),
                        },
                    }
                }
                for verb in ("disable", "enable")
            },
            "/v1/approvals": {
                "get": {
                    "operationId": "listApprovals",
                    "parameters": [
                        {
                            "name": "status",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "enum": ["pending", "approved", "denied", "expired"]},
                        }
                    ],
                    "responses": {
                        "200": {"description": "the tenant's approvals", "content": _json("ApprovalPage")},
                        **_errors(400, 401, 429),
                    },
                }
            },
            "/v1/approvals/{approval_id}": {
                "get": {
                    "operationId": "getApproval",
                    "parameters": [_APPROVAL_ID],
                    "responses": {
                        "200": {"description": "the approval", "content": _json("Approval")},
                        **_errors(*_COMMON),
                    },
                },
                "post": {
                    "operationId": "decideApproval",
                    "parameters": [_APPROVAL_ID],
                    "requestBody": {"required": True, "content": _json("DecideApproval")},
                    "responses": {
                        "202": {"description": "decision journaled", "content": _json("Approval")},
                        **_errors(*_COMMON, 409, 413, 422),
                    },
                },
            },
            "/v1/runs/{run_id}/events": {
                "get": {
                    "operationId": "streamRunEvents",
                    "parameters": [
                        _RUN_ID,
                        {
                            "name": "Last-Event-ID",
                            "in": "header",
                            "required": False,
                            "description": "resume after this event id (a journal offset); empty: from the start",
                            "schema": {"type": "string", "pattern": "^[0-9]{0,18}$"},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "Server-Sent Events: the run's journal, catch-up then live",
                            "content": {"text/event-stream": {"schema": {"$ref": "#/components/schemas/RunEvent"}}},
                        },
                        **_errors(*_COMMON),
                    },
                }
            },
        },
    }
