"""Serving the console's static files under /console, with headers that keep the page inert.

Only the files listed in FILES are served, read once from the package: no path from a request
ever reaches the file system. Every answer carries a Content-Security-Policy that allows scripts
from this origin's files alone (no inline script, no eval, no other origin), so text a tool or a
model wrote cannot run even if a view were to insert it as markup by mistake. The page sends its
API key as a Bearer header it adds itself: no cookie authenticates anything, so a cross-site form
or link cannot act with the console's rights (no CSRF surface)."""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from agentstream.gateway.errors import ApiError

PREFIX = "/console"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Revalidated on each load: an upgraded install is picked up at once (the files are small).
    "Cache-Control": "no-cache",
}
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css"}


def _load() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, media type) of every shipped file, views/ included."""
    root = resources.files("agentstream.console") / "static"
    found: dict[str, tuple[bytes, str]] = {}
    stack = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        for entry in folder.iterdir():
            if entry.is_dir():
                stack.append((entry, f"{prefix}{entry.name}/"))
                continue
            suffix = "." + entry.name.rsplit(".", 1)[-1]
            if suffix in MEDIA_TYPES:
                found[prefix + entry.name] = (entry.read_bytes(), MEDIA_TYPES[suffix])
    return found


FILES = _load()


def _file(name: str) -> Response:
    found = FILES.get(name)
    if found is None:
        return ApiError(404, "not_found", "no such console file").response()
    body, media_type = found
    return Response(body, media_type=media_type, headers=HEADERS)


async def _index(_request: Request) -> Response:
    return _file("index.html")


async def _static(request: Request) -> Response:
    return _file(request.path_params["name"])


async def _to_index(_request: Request) -> Response:
    return RedirectResponse(f"{PREFIX}/", status_code=308)


def console_routes() -> list[Route]:
    """The console's routes, mounted beside the run API's (public: the page holds no data)."""
    return [
        Route(PREFIX, _to_index, methods=["GET"]),
        Route(f"{PREFIX}/", _index, methods=["GET"]),
        Route(f"{PREFIX}/{{name:path}}", _static, methods=["GET"]),
    ]
