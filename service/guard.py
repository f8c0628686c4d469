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

from .asgi import BodyTooLarge, bearer_ok, header, read_body, send_bytes, send_json
from .forms import FormError, parse
from .protocol import Reply
from .routes import Fields, Handler

log = logging.getLogger("resnet.front")
EXEMPT = ("/livez", "/readyz", "/metrics", "/healthz")
V2_HEALTH = ("/v2/health/live", "/v2/health/ready")
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


class Guard:
    """Every route but health and metrics: 401 without the token; 429 beyond ``max_uploads`` bodies arriving
    or ``max_concurrency`` requests being served (a request counts there only once its body is in); 408 for a
    body not in within ``body_timeout_s``; 413 for one over ``max_body_bytes``; 400 for malformed forms; 500
    JSON with a request id for an unexpected error. All JSON ``{error, detail}``.
    """

    def __init__(self, app, max_body_bytes: int, token: str = "", routes: dict[str, Route] | None = None,
                 max_fields: int = 64, max_concurrency: int = 0, v2: V2 | None = None, max_uploads: int = 0,
                 body_timeout_s: float = 0) -> None:  # fmt: skip
        self.app, self.max_body_bytes, self.token, self.v2 = app, max_body_bytes, token, v2
        self.routes, self.max_fields = routes or {}, max_fields
        self.max_concurrency, self.in_flight = max_concurrency, 0
        self.max_uploads, self.uploading, self.body_timeout_s = max_uploads, 0, body_timeout_s

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if path in EXEMPT:
            return await self.app(scope, receive, send)
        if self.v2 is not None and path in V2_HEALTH:  # open, as probes need; no body to read
            return await self._send(send, await self.v2(scope["method"], path, None, b""))
        if not bearer_ok(scope, self.token):
            return await _reply(send, 401, "unauthorized", "a valid bearer token is required",
                                [(b"www-authenticate", b"Bearer")])  # fmt: skip
        body = await self._body(scope, receive, send)
        if body is None:  # refused, or the client left
            return
        if self.max_concurrency and self.in_flight >= self.max_concurrency:
            return await _reply(send, 429, "too_many_requests",
                                f"{self.max_concurrency} requests already in flight on this worker; retry shortly",
                                [(b"retry-after", b"1")])  # fmt: skip
        self.in_flight += 1
        try:
            await self._dispatch(scope, receive, send, path, body)
        finally:
            self.in_flight -= 1

    async def _body(self, scope, receive, send) -> bytes | None:
        """The whole body, within its own bounds: uploads in progress, time and size; None once answered."""
        if self.max_uploads and self.uploading >= self.max_uploads:
            detail = f"{self.max_uploads} uploads already in progress on this worker; retry shortly"
            await _reply(send, 429, "too_many_uploads", detail, [(b"retry-after", b"1")])
            return None
        self.uploading += 1
        try:
            async with asyncio.timeout(self.body_timeout_s or None):
                return await read_body(scope, receive, self.max_body_bytes)
        except TimeoutError:
            await _reply(send, 408, "body_timeout", f"the request body did not arrive within {self.body_timeout_s:g} s")
        except BodyTooLarge:
            await _reply(send, 413, "body_too_large", f"request body exceeds {self.max_body_bytes:,} bytes")
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
            form = parse(ctype or "", body, fields, self.max_fields)
        except FormError as exc:
            return await _reply(send, 400, exc.code, exc.detail)
        try:
            response = await handle(form)
        except Exception:
            request_id = uuid.uuid4().hex[:12]
            log.exception("internal error on %s (request_id %s)", path, request_id)
            return await send_json(send, 500, {"error": "internal", "request_id": request_id,
                                               "detail": "an unexpected error; the log has the traceback"})  # fmt: skip
        await response(scope, _replay(b"", receive), send)

    @staticmethod
    async def _send(send, reply: Reply) -> None:
        await send_bytes(send, reply.status, reply.body, reply.content_type, reply.headers)
