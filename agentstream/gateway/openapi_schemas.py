"""The shapes the run API answers with (its OpenAPI components), written out by hand: unlike the
request bodies, they have no pydantic model. Assembled into the document by `openapi.py`."""

from __future__ import annotations

RUN_STATUSES = ["queued", "running", "awaiting_approval", "halted", "completed", "failed", "cancelled"]

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {
                "type": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string"},
                # Only on `unknown_tool`: the requested names the tenant has no tool of, and those it has.
                "unknown": {"type": "array", "items": {"type": "string"}},
                "available": {"type": "array", "items": {"type": "string"}},
            },
        }
    },
}
RUN_SCHEMA = {
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
        "resumable",
        "created_at_ms",
        "updated_at_ms",
        "events_url",
    ],
    "properties": {
        "id": {"type": "string"},
        "status": {"type": "string", "enum": RUN_STATUSES},
        "task": {"type": "string"},
        "model": {"type": "string"},
        "tools": {"type": "array", "items": {"type": "string"}},
        "max_steps": {"type": "integer"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "steps": {"type": "integer"},
        "reason": {"type": ["string", "null"]},
        "final_answer": {"type": ["string", "null"]},
        "resumable": {"type": "boolean", "description": "halted at a limit that a resume can raise"},
        "flags": {
            "type": "array",
            "description": "marks for review (RunFlagged): e.g. the model kept asking for a denied call",
            "items": {
                "type": "object",
                "properties": {
                    "kind": {"type": "string"},
                    "step": {"type": "integer"},
                    "reason": {"type": "string"},
                    "count": {"type": "integer"},
                },
            },
        },
        "budget": {"$ref": "#/components/schemas/Budget"},
        "cost_usd": {"type": "number", "description": "settled cost so far, in US dollars"},
        "created_at_ms": {"type": "integer"},
        "updated_at_ms": {"type": "integer"},
        "events_url": {"type": "string"},
    },
}


# One event of the stream: `id` is the journal offset, `event` the event type, `data` its JSON record.
SSE_EVENT_SCHEMA = {
    "type": "object",
    "required": ["id", "event", "data"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "event": {"type": "string", "minLength": 1},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {
                "type": "object",
                "required": ["type", "offset", "timestamp_ms", "run_id"],
                "properties": {
                    "type": {"type": "string"},
                    "offset": {"type": "integer", "minimum": 0},
                    "timestamp_ms": {"type": "integer"},
                    "run_id": {"type": "string"},
                },
            },
        },
    },
}

TOOL_SCHEMA = {
    "type": "object",
    "required": [
        "name",
        "version",
        "tier",
        "input_schema",
        "transport",
        "approval_timeout_s",
        "effective_approval_timeout_s",
    ],
    "properties": {
        "name": {"type": "string"},
        "version": {"type": "string"},
        "owner": {"type": ["string", "null"], "description": "the owning tenant; null: platform-wide"},
        "description": {"type": "string"},
        "input_schema": {"type": "object"},
        "tier": {"type": "string", "enum": ["read_only", "reversible", "irreversible"]},
        "scopes": {"type": "array", "items": {"type": "string"}},
        "egress": {"type": "array", "items": {"type": "string"}},
        "secrets": {"type": "array", "items": {"type": "string"}},
        "timeout_ms": {"type": "integer"},
        "approval_timeout_s": {
            "type": ["number", "null"],
            "description": "the registration's approval deadline in seconds; null: the tenant's policy alone",
        },
        "effective_approval_timeout_s": {
            "type": "number",
            "description": "the deadline this tenant's calls get: the tool's, capped by the tenant's policy",
        },
        "transport": {"type": "string", "enum": ["builtin", "stdio", "http"]},
        "registered_at_ms": {"type": "integer"},
        "disabled": {"type": "boolean"},
        "versions": {"type": "array", "items": {"type": "string"}},
    },
}

APPROVAL_SCHEMA = {
    "type": "object",
    "required": ["id", "run_id", "status", "tool", "tier", "arguments_json", "requested_at_ms", "expires_at_ms"],
    "properties": {
        "id": {"type": "string"},
        "run_id": {"type": "string"},
        "status": {"type": "string", "enum": ["pending", "approved", "denied", "expired"]},
        "tool": {"type": "string"},
        "tool_version": {"type": "string"},
        "tier": {"type": "string"},
        "arguments_json": {"type": "string"},
        "reason": {"type": "string"},
        "requested_at_ms": {"type": "integer"},
        "expires_at_ms": {"type": "integer", "description": "past this, the call is denied, never approved"},
        "decided_by": {
            "type": ["string", "null"],
            "description": "`api:<tenant>:key/<key id>`: the API key that decided; `timeout`: the deadline passed",
        },
        "decision_reason": {"type": ["string", "null"]},
        "decided_at_ms": {"type": ["integer", "null"]},
    },
}

RUN_COST_SCHEMA = {
    "type": "object",
    "required": ["run_id", "usd", "model_calls", "tool_calls", "by_tool", "by_model", "price_versions"],
    "properties": {
        "run_id": {"type": "string"},
        "usd": {"type": "number", "description": "settled cost in US dollars (reservations not included)"},
        "input_tokens": {"type": "integer"},
        "cached_input_tokens": {"type": "integer"},
        "output_tokens": {"type": "integer"},
        "model_calls": {"type": "integer"},
        "tool_calls": {"type": "integer"},
        "by_tool": {"type": "object", "additionalProperties": {"type": "number"}},
        "by_model": {"type": "object", "additionalProperties": {"type": "number"}},
        "price_versions": {"type": "array", "items": {"type": "string"}},
        "status": {"type": "string"},
        "budget": {"type": "object"},
    },
}
COST_REPORT_SCHEMA = {
    "type": "object",
    "required": ["group_by", "total_usd", "data"],
    "properties": {
        "group_by": {"type": "string", "enum": ["run", "tool", "model"]},
        "since_ms": {"type": "integer"},
        "total_usd": {"type": "number"},
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "usd", "runs", "calls"],
                "properties": {
                    "key": {"type": "string"},
                    "usd": {"type": "number"},
                    "runs": {"type": "integer"},
                    "calls": {"type": "integer"},
                },
            },
        },
    },
}
