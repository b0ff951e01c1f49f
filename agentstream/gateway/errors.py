"""Machine-readable API errors: every refusal is a 4xx with `{"error": {type, message, field?}}`."""

from __future__ import annotations

from starlette.responses import JSONResponse


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        details: dict[str, object] | None = None,
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

    def response(self) -> JSONResponse:
        body: dict[str, object] = {"type": self.type, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        body.update(self.details)
        return JSONResponse({"error": body}, status_code=self.status, headers=self.headers)


def not_found() -> ApiError:
    # The same answer for a missing run and another tenant's run: existence is not disclosed.
    return ApiError(404, "not_found", "run not found")
