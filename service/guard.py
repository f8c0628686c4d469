"""ASGI middleware in front of every route: concurrency and body limits, bearer token, and the fast paths.

BentoML has no body limit of its own, so a client could stream gigabytes into a worker. Every
body is read here, bounded; the multipart routes' forms are parsed here once, in memory, and
handed to their handlers (routes.py), and the Open Inference Protocol's ``/v2`` routes go to
their handler (protocol.py), both without BentoML's per-request machinery.
"""

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .asgi import BodyTooLarge, bearer_ok, header, read_body, send_bytes, send_json
from .forms import FormError, parse
from .protocol import HEALTH, Reply
from .routes import Fields, Handler

log = logging.getLogger("resnet.front")
EXEMPT = ("/livez", "/readyz", "/metrics", "/healthz")
Route = tuple[Fields, Handler]  # a multipart route's form fields and its handler
V2 = Callable[[str, str, str | None, bytes], Awaitable[Reply]]  # (method, path, header length, body) → reply


async def _reply(send, status: int, error: str, detail: str, headers: list | None = None) -> None:
    await send_json(send, status, {"error": error, "detail": detail}, headers or [])


def _replay(body: bytes, then):
    """An ASGI ``receive`` that yields the buffered body once, then waits on ``then`` (the client's
    own ``receive``, which reports a disconnect when it happens; responses listen for it)."""
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await then()

    return receive


def _internal(path: str) -> dict:
    """A 500 body with a request id; the traceback goes to the log under the same id."""
    request_id = uuid.uuid4().hex[:12]
    log.exception("internal error on %s (request_id %s)", path, request_id)
    return {"error": "internal", "request_id": request_id, "detail": "an unexpected error; the log has the traceback"}


@dataclass(frozen=True)
class Limits:
    """What one request may cost a front worker; 0 turns a limit off."""

    max_body_bytes: int
    max_concurrency: int = 0  # requests being served, counted once their body is in
    max_uploads: int = 0  # bodies arriving
    body_timeout_s: float = 0  # for the whole body to arrive
    timeout_s: float = 0  # to answer, once the body is in
    max_headers: int = 0
    max_header_bytes: int = 0  # names and values together
    max_fields: int = 64  # form fields


class Guard:
    """Every route but health and metrics: 431 beyond the header limits; 401 without the token; 429 beyond
    ``max_uploads`` bodies arriving or ``max_concurrency`` requests being served; 408 for a body not in within
    ``body_timeout_s``; 413 for one over ``max_body_bytes``; 400 for malformed forms; 504 when not answered
    within ``timeout_s``; 500 with a request id for an unexpected error. All JSON ``{error, detail}``.
    """

    def __init__(self, app, limits: Limits, token: str = "", routes: dict[str, Route] | None = None,
                 v2: V2 | None = None) -> None:  # fmt: skip
        self.app, self.limits, self.token, self.v2, self.routes = app, limits, token, v2, routes or {}
        self.in_flight = self.uploading = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if path in EXEMPT:
            return await self.app(scope, receive, send)
        if self.v2 is not None and path in HEALTH:  # open, as probes need; no body to read
            return await self._send(send, await self.v2(scope["method"], path, None, b""))
        if refusal := self._headers_refused(scope):
            return await _reply(send, 431, "headers_too_large", refusal)
        if not bearer_ok(scope, self.token):
            return await _reply(send, 401, "unauthorized", "a valid bearer token is required",
                                [(b"www-authenticate", b"Bearer")])  # fmt: skip
        body = await self._body(scope, receive, send)
        if body is None:  # refused, or the client left
            return
        cap = self.limits.max_concurrency
        if cap and self.in_flight >= cap:
            return await _reply(send, 429, "too_many_requests",
                                f"{cap} requests already in flight on this worker; retry shortly",
                                [(b"retry-after", b"1")])  # fmt: skip
        self.in_flight += 1
        try:
            await self._answer(scope, receive, send, path, body)
        finally:
            self.in_flight -= 1

    def _headers_refused(self, scope) -> str | None:
        """Why the request's headers are beyond the limits (httptools, uvicorn's parser, sets none), or None."""
        headers, lim = scope.get("headers", []), self.limits
        if lim.max_headers and len(headers) > lim.max_headers:
            return f"{len(headers)} header fields; at most {lim.max_headers}"
        size = sum(len(k) + len(v) for k, v in headers)
        if lim.max_header_bytes and size > lim.max_header_bytes:
            return f"{size:,} bytes of header fields; at most {lim.max_header_bytes:,}"
        return None

    async def _answer(self, scope, receive, send, path: str, body: bytes) -> None:
        """Dispatch within the request timeout: 504 JSON if it runs out before the answer has begun."""
        started = False

        async def tracked(message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            async with asyncio.timeout(self.limits.timeout_s or None) as deadline:
                await self._dispatch(scope, receive, tracked, path, body)
        except TimeoutError:
            if not deadline.expired():
                raise
            log.warning("%s not answered within %g s", path, self.limits.timeout_s)
            if not started:
                await _reply(send, 504, "timeout", f"not answered within {self.limits.timeout_s:g} s")

    async def _body(self, scope, receive, send) -> bytes | None:
        """The whole body, within its own bounds: uploads in progress, time and size; None once answered."""
        lim = self.limits
        if lim.max_uploads and self.uploading >= lim.max_uploads:
            detail = f"{lim.max_uploads} uploads already in progress on this worker; retry shortly"
            await _reply(send, 429, "too_many_uploads", detail, [(b"retry-after", b"1")])
            return None
        self.uploading += 1
        try:
            async with asyncio.timeout(lim.body_timeout_s or None):
                return await read_body(scope, receive, lim.max_body_bytes)
        except TimeoutError:
            await _reply(send, 408, "body_timeout", f"the request body did not arrive within {lim.body_timeout_s:g} s")
        except BodyTooLarge:
            await _reply(send, 413, "body_too_large", f"request body exceeds {lim.max_body_bytes:,} bytes")
        finally:
            self.uploading -= 1
        return None

    async def _dispatch(self, scope, receive, send, path: str, body: bytes) -> None:
        if self.v2 is not None and (path == "/v2" or path.startswith("/v2/")):
            length = header(scope, b"inference-header-content-length")
            return await self._send(send, await self.v2(scope["method"], path, length, body))
        route, ctype = self.routes.get(path), header(scope, b"content-type")
        if route is None or scope.get("method") != "POST":
            if scope.get("method") == "POST" and ctype and not ctype.startswith("application/json"):
                return await _reply(send, 415, "unsupported_media_type", "this route takes application/json")
            return await self.app(scope, _replay(body, receive), send)
        fields, handle = route
        try:
            form = parse(ctype or "", body, fields, self.limits.max_fields)
        except FormError as exc:
            return await _reply(send, 400, exc.code, exc.detail)
        try:
            response = await handle(form)
        except Exception:
            return await send_json(send, 500, _internal(path))
        await response(scope, _replay(b"", receive), send)

    @staticmethod
    async def _send(send, reply: Reply) -> None:
        await send_bytes(send, reply.status, reply.body, reply.content_type, reply.headers)
