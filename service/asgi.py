"""Small ASGI helpers shared by the front's Guard, the engine server and the gRPC servicer: bounded bodies,
replies, tokens."""

import hmac
import ipaddress

from .errors import Reply


class BodyTooLarge(Exception):
    """The body grew past its limit while it was read."""


def raw_header(scope, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower case), as sent."""
    for key, value in scope.get("headers") or ():
        if key == name:
            return value
    return None


def header(scope, name: bytes) -> str | None:
    value = raw_header(scope, name)
    return None if value is None else value.decode("latin-1")


def token_ok(authorization: bytes | None, token: str) -> bool:
    """Constant-time check of an ``Authorization: Bearer <token>`` value; true when no token is configured."""
    return not token or hmac.compare_digest(authorization or b"", f"Bearer {token}".encode())


def bearer_ok(scope, token: str) -> bool:
    return token_ok(raw_header(scope, b"authorization"), token)


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (an address or ``localhost``) is this machine."""
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return host == "localhost"


async def read_body(scope, receive, limit: int) -> bytes | None:
    """The whole body, or None when the client went away; BodyTooLarge past ``limit`` (declared or streamed)."""
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks, seen = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        seen += len(chunk)
        if seen > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def send_reply(send, reply: Reply) -> None:
    head = [(b"content-type", reply.content_type), (b"content-length", str(len(reply.body)).encode()), *reply.headers]
    await send({"type": "http.response.start", "status": reply.status, "headers": head})
    await send({"type": "http.response.body", "body": reply.body})
