"""The internals of uvicorn and BentoML that service/http/internals.py relies on, pinned: an upgrade that
changes them fails here first (the behaviour itself is tested over real sockets in test_connections.py)."""

import inspect

from bentoml._internal.configuration.containers import BentoMLContainer
from starlette.middleware.cors import CORSMiddleware
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.http.internals import cors_options


def test_uvicorn_httptools_hooks_the_deadlines_wrap() -> None:
    for hook in ("connection_made", "on_message_begin", "on_headers_complete", "data_received", "connection_lost"):
        assert callable(getattr(HttpToolsProtocol, hook)), hook
    source = inspect.getsource(HttpToolsProtocol)
    assert "self.cycle" in source and "response_complete" in source and "self.transport" in source


def test_bentoml_cors_options_are_starlettes_keywords() -> None:
    assert BentoMLContainer.http.cors.enabled.get() is False and cors_options() is None, "off unless configured"
    keywords = set(inspect.signature(CORSMiddleware).parameters) - {"app"}
    assert set(BentoMLContainer.access_control_options.get()) <= keywords
