"""The one error type the service raises, and the one place that turns any exception into an HTTP reply."""

import json
import logging
import uuid
from dataclasses import dataclass, field

log = logging.getLogger("resnet.errors")


class ApiError(Exception):
    """Bad input (4xx) or a refusal to take more work now (429, 503): a JSON answer, nothing internal."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


class EngineUnavailable(ApiError):
    """The engine cannot take the call now (unreachable, restarting, at its limit): 503, retry shortly."""

    def __init__(self, reason: str) -> None:
        detail = f"the inference engine is at capacity or restarting ({reason}); retry shortly"
        super().__init__(503, "overloaded", detail)


@dataclass
class Reply:
    """An HTTP answer as bytes: what every route family sends."""

    status: int
    body: bytes
    content_type: bytes = b"application/json"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


def json_reply(status: int, payload: object, headers: list[tuple[bytes, bytes]] | None = None) -> Reply:
    return Reply(status, json.dumps(payload).encode(), headers=headers or [])


def reply(exc: BaseException, protocol: bool = False, where: str = "") -> Reply:
    """An ApiError as its status (Retry-After on 429 and 503); anything else a 500 with a request id, the
    traceback logged under it. ``protocol``: the Open Inference Protocol's shape ``{"error": message}``;
    otherwise ``{"error": code, "detail": detail}``."""
    if isinstance(exc, ApiError):
        if exc.status >= 500:  # the service's own trouble, not the client's: the operator should see it
            log.warning("%s answered %d: %s", where, exc.status, exc.detail)
        headers = [(b"retry-after", b"1")] if exc.status in (429, 503) else []
        if exc.status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        body = {"error": exc.detail} if protocol else {"error": exc.code, "detail": exc.detail}
        return json_reply(exc.status, body, headers)
    request_id = uuid.uuid4().hex[:12]
    log.error("internal error on %s (request_id %s)", where, request_id, exc_info=exc)
    if protocol:
        return json_reply(500, {"error": f"internal error; request_id {request_id}"})
    detail = "an unexpected error; the log has the traceback"
    return json_reply(500, {"error": "internal", "request_id": request_id, "detail": detail})
