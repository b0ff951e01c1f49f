"""Machine-readable API errors: every refusal is a 4xx with `{"error": {type, message, field?}}`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from starlette.responses import Response

from agentstream.contract.resources import Error, ErrorDetail


def model_response(body: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A response body built from the contract's model (agentstream.contract.resources)."""
    return Response(body.model_dump_json(), status_code=status, headers=headers, media_type="application/json")


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.field = field
        self.headers = headers or {}
        # Machine-readable facts beside the message (e.g. which tool names were unknown), so a
        # client can act on a refusal without parsing its prose.
        self.details = details or {}

    def response(self) -> Response:
        detail = ErrorDetail(type=self.type, message=self.message, field=self.field, **self.details)
        # Absent, not null: `field` and the details appear only where they say something.
        body = Error(error=detail).model_dump_json(exclude_none=True)
        return Response(body, status_code=self.status, headers=self.headers, media_type="application/json")


def not_found() -> ApiError:
    # The same answer for a missing run and another tenant's run: existence is not disclosed.
    return ApiError(404, "not_found", "run not found")
