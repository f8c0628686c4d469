"""Request-body limit and bearer token, through real HTTP and through the ASGI middleware itself."""

import asyncio
import os

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from service.errors import Reply
from service.http.guard import Guard, RequestLimits


async def _echo(request):
    return PlainTextResponse(str(len(await request.body())))


def app(token: str = "", **limits) -> Guard:
    echo = Starlette(routes=[Route("/{path:path}", _echo, methods=["GET", "POST"])])
    return Guard(echo, RequestLimits(**limits), token)


def call(asgi, method: str, path: str, **kw) -> httpx.Response:
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://t") as c:
            return await c.request(method, path, **kw)

    return asyncio.run(go())


def test_streamed_body_over_the_limit_is_413() -> None:
    async def chunks():
        for _ in range(10):
            yield b"x" * 1000

    r = call(app(max_body_bytes=5000), "POST", "/classify", content=chunks())
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"
    assert call(app(max_body_bytes=5000), "POST", "/classify", content=b"x" * 4000).text == "4000"


def test_token_required_except_for_health() -> None:
    guarded = app(max_body_bytes=10**6, token="s3cret")
    r = call(guarded, "POST", "/classify")
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    assert call(guarded, "POST", "/classify", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert call(guarded, "POST", "/classify", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    for path in ("/livez", "/readyz", "/metrics"):
        assert call(guarded, "GET", path).status_code == 200


@pytest.mark.slow
@pytest.mark.xdist_group("server")
def test_server_refuses_a_large_body_before_reading_it(url) -> None:
    big = os.urandom(5 * 2**20)
    r = httpx.post(f"{url}/classify", files={"image": ("big.jpg", big, "image/jpeg")}, timeout=30)
    assert r.status_code == 413 and r.json() == {
        "error": "body_too_large",
        "detail": "request body exceeds 4,194,304 bytes",
    }
    assert httpx.get(f"{url}/readyz").status_code == 200


def test_v2_routes_need_the_token_but_their_health_does_not() -> None:
    seen = []

    async def v2(method, path, length, body) -> Reply:
        seen.append((method, path, body))
        return Reply(200, b'{"ok": true}')

    guarded = Guard(Starlette(), RequestLimits(max_body_bytes=10**6), token="s3cret", v2=v2)
    assert call(guarded, "GET", "/v2/health/ready").status_code == 200
    assert call(guarded, "POST", "/v2/models/m/infer", content=b"{}").status_code == 401
    ok = call(guarded, "POST", "/v2/models/m/infer", content=b"{}", headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and ok.json() == {"ok": True}
    assert seen == [("GET", "/v2/health/ready", b""), ("POST", "/v2/models/m/infer", b"{}")], "the body, once"


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        ({f"x-h{i}": "v" for i in range(30)}, False),
        ({f"x-h{i}": "v" for i in range(60)}, True),
        ({"x-big": "v" * 3000}, False),
        ({"x-big": "v" * 5000}, True),
    ],
)
def test_header_count_and_size_limits(headers: dict, refused: bool) -> None:
    r = call(app(max_body_bytes=1000, max_headers=50, max_header_bytes=4096), "GET", "/x", headers=headers)
    assert (r.status_code, r.json()["error"] if refused else r.text) == (
        (431, "headers_too_large") if refused else (200, "0")
    )


async def _slow(request):
    await asyncio.sleep(5)
    return PlainTextResponse("late")


def test_a_request_not_answered_in_time_gets_504_json() -> None:
    guarded = Guard(Starlette(routes=[Route("/slow", _slow, methods=["POST"])]), RequestLimits(10**6, timeout_s=0.2))
    r = call(guarded, "POST", "/slow", json={})
    assert r.status_code == 504 and r.json()["error"] == "timeout" and "0.2 s" in r.json()["detail"]


CORS_OPTIONS = {"allow_origins": ["https://demo.example"], "allow_methods": ["POST"], "allow_headers": ["*"]}


@pytest.mark.parametrize("cors", [True, False])
@pytest.mark.parametrize("token", ["s3cret", ""])
def test_cors_headers_on_the_guards_own_answers_and_preflights_without_a_token(cors: bool, token: str) -> None:
    """BentoML's CORS middleware sits inside the Guard (stood in for by Starlette's here): preflights pass
    to it without a token; the Guard's own answers (fast routes, refusals) carry the same headers."""
    from starlette.middleware.cors import CORSMiddleware

    inner = Starlette(routes=[Route("/{path:path}", _echo, methods=["GET", "POST"])])
    inner = CORSMiddleware(inner, **CORS_OPTIONS) if cors else inner
    guarded = Guard(inner, RequestLimits(max_body_bytes=100), token, cors=CORS_OPTIONS if cors else None)
    origin = {"Origin": "https://demo.example"}
    asks = {**origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    pre = call(guarded, "OPTIONS", "/classify", headers=asks)
    assert pre.status_code != 401 and (pre.headers.get("access-control-allow-origin") == origin["Origin"]) == cors
    refused = call(guarded, "POST", "/classify", headers=origin, content=b"x" * 200)  # 401 or 413: the Guard's
    assert refused.status_code in (401, 413)
    assert (refused.headers.get("access-control-allow-origin") == origin["Origin"]) == cors
    passed = call(guarded, "POST", "/other", headers={**origin, "Authorization": f"Bearer {token}"}, content=b"x")
    assert passed.status_code == 200 and passed.headers.get("vary") == ("Origin" if cors else None), "one layer"
