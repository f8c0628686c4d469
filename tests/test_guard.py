"""Request-body limit and bearer token, through real HTTP and through the ASGI middleware itself."""

import asyncio
import os

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from service.guard import Guard


async def _echo(request):
    return PlainTextResponse(str(len(await request.body())))


def app(**options) -> Guard:
    return Guard(Starlette(routes=[Route("/{path:path}", _echo, methods=["GET", "POST"])]), **options)


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


@pytest.mark.xdist_group("server")
def test_server_refuses_a_large_body_before_reading_it(url) -> None:
    big = os.urandom(5 * 2**20)
    r = httpx.post(f"{url}/classify", files={"image": ("big.jpg", big, "image/jpeg")}, timeout=30)
    assert r.status_code == 413 and r.json() == {
        "error": "body_too_large",
        "detail": "request body exceeds 4,194,304 bytes",
    }
    assert httpx.get(f"{url}/readyz").status_code == 200
