"""One kept-alive HTTP/1.1 connection that POSTs bodies to one URL: the exporting process's way to
its collector.

Why not httpx (which the rest of the platform uses): an exporting process does nothing but post
batches, and httpx's request machinery cost it ~2 ms of CPU per post, a quarter of all its work at
full load (py-spy, `bench/step_overhead.py --trace`); the standard library's `http.client` does the
same post for a fraction of that. Only what OTLP/HTTP needs is here: http and https (with a CA file),
credentials in the URL sent as basic auth, fixed headers, a timeout, and one retry when a reused
connection turns out to have been closed by the collector while idle.
"""

from __future__ import annotations

import base64
import http.client
import ssl
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit, urlunsplit

# A kept-alive connection that the server closed while idle fails on its next request in one of
# these ways, before any of the request could have been acted on: that request is sent once more.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


def without_credentials(url: str) -> str:
    """`url` with any `user:password@` removed: what logs and errors may show."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


class Poster:
    def __init__(self, url: str, headers: Mapping[str, str], *, timeout_s: float, verify: str | bool = True) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {without_credentials(url)!r}")
        self.host = parts.hostname
        self.port = parts.port
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.timeout_s = timeout_s
        self.headers = dict(headers)
        if parts.username is not None and not any(k.lower() == "authorization" for k in headers):
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            self.headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        self._context: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._context = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
            if verify is False:
                self._context.check_hostname = False
                self._context.verify_mode = ssl.CERT_NONE
        self._connection: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            if self._context is not None:
                self._connection = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout_s, context=self._context
                )
            else:
                self._connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        return self._connection

    def post(self, body: bytes) -> int:
        """Sends `body`; the response's status. Raises OSError (http.client's errors included)
        when no response came; the connection is then dropped and the next post opens another."""
        reused = self._connection is not None
        try:
            return self._post_once(body)  # which drops the connection on any failure
        except _STALE:
            if not reused:
                raise
            return self._post_once(body)

    def _post_once(self, body: bytes) -> int:
        connection = self._connect()
        try:
            connection.request("POST", self.path, body=body, headers=self.headers)
            response = connection.getresponse()
            response.read()  # the whole answer, so the connection can carry the next post
        except BaseException:
            self.close()
            raise
        if response.will_close:
            self.close()
        return response.status

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
