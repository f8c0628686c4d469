"""The internals of uvicorn and BentoML that service/http/internals.py relies on, pinned: an upgrade that
changes them fails here first (the behaviour itself is tested over real sockets in test_connections.py)."""

import asyncio
import inspect
import logging
import signal

import aiohttp
import uvicorn
from bentoml._internal.configuration.containers import BentoMLContainer
from starlette.middleware.cors import CORSMiddleware
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.http.internals import cors_options, serve_socket


def test_uvicorn_httptools_hooks_the_deadlines_wrap() -> None:
    for hook in ("connection_made", "on_message_begin", "on_headers_complete", "data_received", "connection_lost"):
        assert callable(getattr(HttpToolsProtocol, hook)), hook
    source = inspect.getsource(HttpToolsProtocol)
    assert "self.cycle" in source and "response_complete" in source and "self.transport" in source


def test_bentoml_cors_options_are_starlettes_keywords() -> None:
    assert BentoMLContainer.http.cors.enabled.get() is False and cors_options() is None, "off unless configured"
    keywords = set(inspect.signature(CORSMiddleware).parameters) - {"app"}
    assert set(BentoMLContainer.access_control_options.get()) <= keywords


def test_a_second_server_serves_its_socket_and_leaves_the_signals_alone(tmp_path) -> None:
    """What an engine beside the fronts does in its BentoML worker (tests/test_lifecycle.py uses it for real)."""

    async def app(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    async def main() -> tuple[int, bytes]:
        path = str(tmp_path / "engine-0.sock")
        (tmp_path / "engine-0.sock").write_text("left by a predecessor")
        stop = await serve_socket(app, path, 5)
        try:
            connector = aiohttp.UnixConnector(path=path)
            async with aiohttp.ClientSession(connector=connector) as session, session.get("http://engine/") as answer:
                return answer.status, await answer.read()
        finally:
            await stop()

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    logger = logging.getLogger("uvicorn.error")
    logger.setLevel(logging.INFO)
    assert asyncio.run(main()) == (200, b"ok")
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers, "the main server's handlers stay"
    assert logger.level == logging.INFO, "and so does the logging BentoML configured"
    assert "def capture_signals" in inspect.getsource(uvicorn.Server), "what the second server leaves out"
