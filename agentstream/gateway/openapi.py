"""The OpenAPI document of the run API, built from the same pydantic models that validate requests."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from agentstream.gateway.models import CancelRun, CreateRun

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}},
        }
    },
}
_RUN = {
    "type": "object",
    "required": [
        "id",
        "status",
        "task",
        "model",
        "tools",
        "max_steps",
        "labels",
        "steps",
        "created_at_ms",
        "updated_at_ms",
        "events_url",
    ],
    "properties": {
        "id": {"type": "string"},
        "status": {"type": "string", "enum": ["queued", "running", "completed", "failed", "cancelled"]},
        "task": {"type": "string"},
        "model": {"type": "string"},
        "tools": {"type": "array", "items": {"type": "string"}},
        "max_steps": {"type": "integer"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "steps": {"type": "integer"},
        "reason": {"type": ["string", "null"]},
        "final_answer": {"type": ["string", "null"]},
        "created_at_ms": {"type": "integer"},
        "updated_at_ms": {"type": "integer"},
        "events_url": {"type": "string"},
    },
}


def _json(schema_ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"description": "error", "content": _json("Error")} for c in codes}


_RUN_ID = {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"}}
_COMMON = (400, 401, 404, 429)


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "agentstream run API", "version": "1"},
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": _ERROR,
                "Run": _RUN,
                "RunPage": {
                    "type": "object",
                    "required": ["data", "next_cursor"],
                    "properties": {
                        "data": {"type": "array", "items": {"$ref": "#/components/schemas/Run"}},
                        "next_cursor": {"type": ["string", "null"]},
                    },
                },
                "CreateRun": CreateRun.model_json_schema(),
                "CancelRun": CancelRun.model_json_schema(),
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
                            "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                        },
                        {
                            "name": "wait",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "number", "minimum": 0, "maximum": 60},
                        },
                    ],
                    "requestBody": {"required": True, "content": _json("CreateRun")},
                    "responses": {
                        "200": {"description": "the run this key already created", "content": _json("Run")},
                        "201": {"description": "created", "content": _json("Run")},
                        "202": {"description": "created; still running after `wait`", "content": _json("Run")},
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
                            "schema": {
                                "type": "string",
                                "enum": ["queued", "running", "completed", "failed", "cancelled"],
                            },
                        },
                        {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"}},
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
            "/v1/runs/{run_id}/resume": {
                "post": {
                    "operationId": "resumeRun",
                    "parameters": [_RUN_ID],
                    "responses": {"202": {"description": "resumed", "content": _json("Run")}, **_errors(*_COMMON, 409)},
                }
            },
            "/v1/runs/{run_id}/events": {
                "get": {
                    "operationId": "streamRunEvents",
                    "parameters": [
                        _RUN_ID,
                        {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": {
                            "description": "Server-Sent Events: the run's journal, catch-up then live",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        **_errors(*_COMMON),
                    },
                }
            },
        },
    }
