"""The server name (SNI) a TLS client asks for, read from its ClientHello before any byte of the
tunnel reaches the upstream, so the egress proxy can hold it to the CONNECT target."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

_HANDSHAKE = 0x16
_CLIENT_HELLO = 1
_SERVER_NAME = 0x0000
_ENCRYPTED_CLIENT_HELLO = 0xFE0D
_HOST_NAME = 0
_MAX_RECORD = 16_384  # TLSPlaintext.length: 2^14 (RFC 8446 5.1)
MAX_CLIENT_HELLO_BYTES = 64 * 1024


class ClientHelloError(ValueError):
    pass


def is_tls_handshake(first: bytes) -> bool:
    return bool(first) and first[0] == _HANDSHAKE


async def read_client_hello(
    first: bytes, read: Callable[[int], Awaitable[bytes]], limit: int = MAX_CLIENT_HELLO_BYTES
) -> tuple[bytes, bytes]:
    """Reads TLS records, starting with `first` (bytes already read), until the ClientHello
    message is whole (it may span records). Returns every byte read, to forward as is, and the
    ClientHello's body."""
    buf, payload, pos = first, b"", 0
    while True:
        while len(buf) - pos >= 5:
            length = int.from_bytes(buf[pos + 3 : pos + 5], "big")
            if buf[pos] != _HANDSHAKE:
                raise ClientHelloError("a record other than a handshake came before the ClientHello ended")
            if not 0 < length <= _MAX_RECORD:
                raise ClientHelloError(f"a TLS record of {length} bytes")
            if len(buf) - pos - 5 < length:
                break
            payload += buf[pos + 5 : pos + 5 + length]
            pos += 5 + length
            if len(payload) >= 4:
                if payload[0] != _CLIENT_HELLO:
                    raise ClientHelloError("the first handshake message is not a ClientHello")
                need = 4 + int.from_bytes(payload[1:4], "big")
                if need > limit:
                    raise ClientHelloError(f"a ClientHello of {need} bytes (limit {limit})")
                if len(payload) >= need:
                    return buf, payload[4:need]
        if len(buf) > limit:
            raise ClientHelloError(f"no complete ClientHello within {limit} bytes")
        more = await read(_MAX_RECORD + 5)
        if not more:
            raise ClientHelloError("the connection ended inside the ClientHello")
        buf += more


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ClientHelloError("a truncated ClientHello")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def number(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vector(self, length_bytes: int) -> bytes:
        return self.take(self.number(length_bytes))

    @property
    def done(self) -> bool:
        return self.pos >= len(self.data)


def server_name(client_hello: bytes) -> str | None:
    """The host name in the ClientHello's server_name extension, or None when it has none.
    Refuses what would hide or confuse it: several names, a repeated extension, Encrypted ClientHello."""
    c = _Cursor(client_hello)
    c.take(2 + 32)  # legacy_version, random
    c.vector(1)  # legacy_session_id
    c.vector(2)  # cipher_suites
    c.vector(1)  # legacy_compression_methods
    if c.done:
        return None  # no extensions at all
    extensions = _Cursor(c.vector(2))
    seen: set[int] = set()
    name: str | None = None
    while not extensions.done:
        kind = extensions.number(2)
        body = extensions.vector(2)
        if kind in seen:
            raise ClientHelloError(f"extension {kind} appears twice")
        seen.add(kind)
        if kind == _ENCRYPTED_CLIENT_HELLO:
            raise ClientHelloError("an Encrypted ClientHello hides the server name")
        if kind == _SERVER_NAME:
            names = _Cursor(_Cursor(body).vector(2))
            found = []
            while not names.done:
                name_type = names.number(1)
                value = names.vector(2)
                if name_type == _HOST_NAME:
                    found.append(value)
            if len(found) != 1:
                raise ClientHelloError(f"{len(found)} host names in server_name")
            try:
                name = found[0].decode("ascii")
            except UnicodeDecodeError as exc:
                raise ClientHelloError("a server name that is not ASCII") from exc
    return name
