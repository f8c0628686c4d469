"""ASGI middleware in front of every route: concurrency and body limits, bearer token, form validation.

BentoML has no body limit of its own, so a client could stream gigabytes into a worker; and
its multipart parser answers 500 to an unknown file field and treats a text ``image`` field as a
URL to download. Multipart routes are therefore read here (bounded), checked, and replayed.
"""

import hmac
import json

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import Request

EXEMPT = ("/livez", "/readyz", "/metrics", "/healthz")
Form = tuple[frozenset[str], frozenset[str]]  # (file fields, plain fields) of one route


async def _reply(send, status: int, error: str, detail: str, headers: list | None = None) -> None:
    body = json.dumps({"error": error, "detail": detail}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": head + (headers or [])})
    await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, then=None):
    """An ASGI ``receive`` that yields the buffered body once, then waits on ``then`` (the client's
    own ``receive``, which reports a disconnect when it happens; responses listen for it)."""
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await then() if then is not None else {"type": "http.disconnect"}

    return receive


async def check_form(scope, body: bytes, form: Form, max_fields: int) -> tuple[str, str] | None:
    """(error, detail) when the multipart body does not fit the route's fields, else None."""
    files, plain = form
    need = f"multipart/form-data with a file field {' or '.join(sorted(files))}"
    ctype = dict(scope.get("headers") or []).get(b"content-type", b"").decode("latin-1")
    if not ctype.startswith("multipart/form-data"):
        return "bad_request", f"send {need}"
    try:
        parsed = await Request(scope, _replay(body)).form(max_files=max_fields, max_fields=max_fields)
    except MultiPartException as exc:
        return "bad_form", f"the multipart body could not be parsed: {exc.message}"
    except Exception:
        return "bad_form", "the multipart body could not be parsed"
    try:
        unknown = sorted(set(parsed.keys()) - files - plain)
        if unknown:
            allowed = ", ".join(sorted(files | plain))
            return "unknown_field", f"unknown field {', '.join(unknown)[:200]}; allowed: {allowed}"
        if not any(k in parsed for k in files):
            return "missing_image", f"send {need}"
        for key in parsed:
            values = parsed.getlist(key)
            if key in files and not all(isinstance(v, UploadFile) for v in values):
                return "bad_field", f"{key} must be a file upload, not text"
            if key in plain and any(isinstance(v, UploadFile) for v in values):
                return "bad_field", f"{key} must be a plain form value, not a file"
    finally:
        await parsed.close()
    return None


class Guard:
    """429 beyond ``max_concurrency`` requests in flight (health and metrics exempt); 401 without the
    token; 413 for bodies over ``max_body_bytes``; 400 for malformed forms. All JSON ``{error, detail}``.
    """

    def __init__(self, app, max_body_bytes: int, token: str = "", forms: dict[str, Form] | None = None,
                 max_fields: int = 64, max_concurrency: int = 0) -> None:  # fmt: skip
        self.app, self.max_body_bytes, self.token = app, max_body_bytes, token
        self.forms, self.max_fields = forms or {}, max_fields
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
        headers = dict(scope.get("headers") or [])
        if self.token:
            given = headers.get(b"authorization", b"").decode("latin-1")
            if not hmac.compare_digest(given, f"Bearer {self.token}"):
                return await _reply(send, 401, "unauthorized", "a valid bearer token is required",
                                    [(b"www-authenticate", b"Bearer")])  # fmt: skip
        limit = self.max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await _reply(send, 413, "body_too_large", f"request body exceeds {limit:,} bytes")
        chunks, seen = [], 0
        while True:  # read the whole body, bounded; a streamed body over the limit stops here
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            seen += len(message.get("body", b""))
            if seen > limit:
                return await _reply(send, 413, "body_too_large", f"request body exceeds {limit:,} bytes")
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        form = self.forms.get(path)
        if form is not None and scope.get("method") == "POST":
            problem = await check_form(scope, body, form, self.max_fields)
            if problem:
                return await _reply(send, 400, *problem)
        await self.app(scope, _replay(body, receive), _plain_validation_errors(send))


def _plain_validation_errors(send):
    """Rewrite BentoML's 400 bodies (pydantic error lists) into ``{error, detail}`` with a sentence."""
    held: dict | None = None
    chunks: list[bytes] = []

    async def wrapped(message) -> None:
        nonlocal held
        if message["type"] == "http.response.start" and message["status"] == 400:
            held = message
            return
        if held is None:
            return await send(message)
        chunks.append(message.get("body", b""))
        if message.get("more_body"):
            return
        body = b"".join(chunks)
        try:
            parsed = json.loads(body)
            problems = parsed["detail"]
            if isinstance(problems, list):
                detail = "; ".join(
                    f"{'.'.join(map(str, p.get('loc', []))) or 'body'}: {p.get('msg')}" for p in problems
                )
                body = json.dumps({"error": "bad_parameter", "detail": detail}).encode()
        except (ValueError, KeyError, TypeError, AttributeError):
            pass
        headers = [(k, v) for k, v in held["headers"] if k.lower() != b"content-length"]
        await send({**held, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return wrapped
