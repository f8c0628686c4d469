"""ASGI middleware in front of every route: concurrency and body limits, bearer token, and the multipart fast path.

BentoML has no body limit of its own, so a client could stream gigabytes into a worker. Every
body is read here, bounded; the multipart routes' forms are parsed here once, in memory, and
handed to their handlers (routes.py) without BentoML's per-request machinery.
"""

import logging
import uuid

from .asgi import BodyTooLarge, bearer_ok, header, read_body, send_json
from .forms import FormError, parse
from .routes import Fields, Handler

log = logging.getLogger("resnet.front")
EXEMPT = ("/livez", "/readyz", "/metrics", "/healthz")
Route = tuple[Fields, Handler]  # a multipart route's form fields and its handler


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
    """429 beyond ``max_concurrency`` requests in flight (health and metrics exempt); 401 without the
    token; 413 for bodies over ``max_body_bytes``; 400 for malformed forms; 500 JSON with a request id
    for an unexpected error. All JSON ``{error, detail}``.
    """

    def __init__(self, app, max_body_bytes: int, token: str = "", routes: dict[str, Route] | None = None,
                 max_fields: int = 64, max_concurrency: int = 0) -> None:  # fmt: skip
        self.app, self.max_body_bytes, self.token = app, max_body_bytes, token
        self.routes, self.max_fields = routes or {}, max_fields
        self.max_concurrency, self.in_flight = max_concurrency, 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if path.startswith(EXEMPT):
            return await self.app(scope, receive, send)
        if self.max_concurrency and self.in_flight >= self.max_concurrency:
            return await _reply(send, 429, "too_many_requests",
                                f"{self.max_concurrency} requests already in flight on this worker; retry shortly",
                                [(b"retry-after", b"1")])  # fmt: skip
        self.in_flight += 1
        try:
            await self._guarded(scope, receive, send, path)
        finally:
            self.in_flight -= 1

    async def _guarded(self, scope, receive, send, path: str) -> None:
        if not bearer_ok(scope, self.token):
            return await _reply(send, 401, "unauthorized", "a valid bearer token is required",
                                [(b"www-authenticate", b"Bearer")])  # fmt: skip
        try:
            body = await read_body(scope, receive, self.max_body_bytes)
        except BodyTooLarge:
            return await _reply(send, 413, "body_too_large", f"request body exceeds {self.max_body_bytes:,} bytes")
        if body is None:  # the client left
            return
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
