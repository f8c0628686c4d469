"""ASGI middleware in front of every route: concurrency and body limits, bearer token, and the fast paths.

BentoML has no body limit of its own, so a client could stream gigabytes into a worker. Every
body is read here, bounded; the multipart routes' forms are parsed here once, in memory, and
handed to their handlers (routes.py), and the Open Inference Protocol's ``/v2`` routes go to
their handler, both without BentoML's per-request machinery.
"""

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware

from ..asgi import BodyTooLarge, bearer_ok, header, is_loopback, read_body, send_reply
from ..errors import ApiError, Reply, reply
from ..protocol.paths import HEALTH, REPOSITORY, change_refused, is_v2
from ..rollout import HEADER, ROUTING_KEY
from .forms import parse
from .routes import Route

log = logging.getLogger("resnet.front")
EXEMPT = ("/livez", "/readyz", "/metrics", "/healthz")
V2 = Callable[[str, str, str | None, bytes], Awaitable[Reply]]  # (method, path, header length, body) → reply


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


@dataclass(frozen=True)
class RequestLimits:
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
    """Every route but health and metrics: 431 beyond the header limits; 401 without the token (403 for loading
    or unloading a model from another host when there is no token); 429 beyond
    ``max_uploads`` bodies arriving or ``max_concurrency`` requests being served; 408 for a body not in within
    ``body_timeout_s``; 413 for one over ``max_body_bytes``; 400 for malformed forms; 504 when not answered
    within ``timeout_s``; 500 with a request id for an unexpected error. Its own answers carry the CORS headers
    of ``cors`` (BentoML's ``http.cors`` options; BentoML's CORS middleware sits inside this one); preflights
    pass to BentoML's, without a token.
    """

    def __init__(
        self,
        app,
        limits: RequestLimits,
        token: str = "",
        routes: dict[str, Route] | None = None,
        v2: V2 | None = None,
        cors: dict | None = None,
    ) -> None:
        self.app, self.limits, self.token, self.v2, self.routes = app, limits, token, v2, routes or {}
        self.cors = CORSMiddleware(app, **cors) if cors is not None else None
        self.in_flight = self.uploading = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT or scope["method"] == "OPTIONS":
            return await self.app(scope, receive, send)
        path, started = scope["path"], False

        async def tracked(message) -> None:  # what BentoML's routes answer through (its CORS is inside)
            nonlocal started
            started = True
            await send(message)

        own = tracked  # what the Guard answers through
        if self.cors is not None and header(scope, b"origin") is not None:
            own = functools.partial(self.cors.send, send=tracked, request_headers=Headers(scope=scope))
        try:
            await self._guarded(scope, receive, own, tracked, path)
        except Exception as exc:  # refusals here and errors of the fast paths, in their route family's shape
            if not started:
                await send_reply(own, reply(exc, protocol=self.v2 is not None and is_v2(path), where=path))
            elif not isinstance(exc, ApiError):  # too late to answer: uvicorn logs it and closes the connection
                raise

    async def _guarded(self, scope, receive, send, app_send, path: str) -> None:
        if self.v2 is not None and path in HEALTH:
            return await send_reply(send, await self.v2(scope["method"], path, None, b""))
        if refusal := self._headers_refused(scope):
            raise ApiError(431, "headers_too_large", refusal)
        if not bearer_ok(scope, self.token):
            raise ApiError(401, "unauthorized", "a valid bearer token is required")
        if path.startswith(REPOSITORY):
            local = is_loopback((scope.get("client") or ("",))[0])
            if refusal := change_refused(self.token, local):
                raise ApiError(403, "forbidden", refusal)
        ROUTING_KEY.set(header(scope, HEADER.encode()))  # a rollout's sticky key (service/rollout.py)
        body = await self._body(scope, receive)
        if body is None:  # the client left
            return
        cap = self.limits.max_concurrency
        if cap and self.in_flight >= cap:
            raise ApiError(429, "too_many_requests", f"{cap} requests already in flight on this worker; retry shortly")
        self.in_flight += 1
        try:
            await self._answer(scope, receive, send, app_send, path, body)
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

    async def _answer(self, scope, receive, send, app_send, path: str, body: bytes) -> None:
        """Dispatch within the request timeout: 504 if it runs out (answered unless the answer has begun)."""
        try:
            async with asyncio.timeout(self.limits.timeout_s or None) as deadline:
                await self._dispatch(scope, receive, send, app_send, path, body)
        except TimeoutError:
            if not deadline.expired():
                raise
            log.warning("%s not answered within %g s", path, self.limits.timeout_s)
            raise ApiError(504, "timeout", f"not answered within {self.limits.timeout_s:g} s") from None

    async def _body(self, scope, receive) -> bytes | None:
        """The whole body, within its own bounds: uploads in progress, time and size; None if the client left."""
        lim = self.limits
        if lim.max_uploads and self.uploading >= lim.max_uploads:
            detail = f"{lim.max_uploads} uploads already in progress on this worker; retry shortly"
            raise ApiError(429, "too_many_uploads", detail)
        self.uploading += 1
        try:
            async with asyncio.timeout(lim.body_timeout_s or None):
                return await read_body(scope, receive, lim.max_body_bytes)
        except TimeoutError:
            detail = f"the request body did not arrive within {lim.body_timeout_s:g} s"
            raise ApiError(408, "body_timeout", detail) from None
        except BodyTooLarge:
            raise ApiError(413, "body_too_large", f"request body exceeds {lim.max_body_bytes:,} bytes") from None
        finally:
            self.uploading -= 1

    async def _dispatch(self, scope, receive, send, app_send, path: str, body: bytes) -> None:
        method, ctype = scope["method"], header(scope, b"content-type")
        if self.v2 is not None and is_v2(path):
            length = header(scope, b"inference-header-content-length")
            return await send_reply(send, await self.v2(method, path, length, body))
        route = self.routes.get(path)
        if route is None or method != "POST":
            if method == "POST" and ctype and not ctype.startswith("application/json"):
                raise ApiError(415, "unsupported_media_type", "this route takes application/json")
            return await self.app(scope, _replay(body, receive), app_send)
        form = parse(ctype or "", body, route.fields, self.limits.max_fields)
        await send_reply(send, await route.handle(form))
