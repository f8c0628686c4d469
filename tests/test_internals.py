"""The internals of uvicorn and BentoML that service/http/internals.py relies on, pinned: an upgrade that
changes them fails here first (the behaviour itself is tested over real sockets in test_connections.py)."""

import importlib
import inspect

import pytest
from bentoml._internal.configuration.containers import BentoMLContainer
from starlette.middleware.cors import CORSMiddleware
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.http.internals import cors_options, dependency_url


def test_uvicorn_httptools_hooks_the_deadlines_wrap() -> None:
    for hook in ("connection_made", "on_message_begin", "on_headers_complete", "data_received", "connection_lost"):
        assert callable(getattr(HttpToolsProtocol, hook)), hook
    source = inspect.getsource(HttpToolsProtocol)
    assert "self.cycle" in source and "response_complete" in source and "self.transport" in source


def test_bentoml_cors_options_are_starlettes_keywords() -> None:
    assert BentoMLContainer.http.cors.enabled.get() is False and cors_options() is None, "off unless configured"
    keywords = set(inspect.signature(CORSMiddleware).parameters) - {"app"}
    assert set(BentoMLContainer.access_control_options.get()) <= keywords


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("file:///tmp/bentoml-uds-x/1%20a.sock", "unix:///tmp/bentoml-uds-x/1 a.sock"),
        ("tcp://127.0.0.1:5", "http://127.0.0.1:5"),
    ],
)
def test_bentoml_hands_its_workers_the_dependency_map(given: str, url: str) -> None:
    """What BentoML's worker sets from BENTOML_RUNNER_MAP (tests/test_topology.py uses it for real)."""
    before = BentoMLContainer.remote_runner_mapping.get()
    BentoMLContainer.remote_runner_mapping.set({"resnet-engine": given})
    try:
        assert dependency_url("resnet-engine") == url
    finally:
        BentoMLContainer.remote_runner_mapping.set(before)
    worker = inspect.getsource(importlib.import_module("_bentoml_impl.worker.service"))
    assert "BENTOML_RUNNER_MAP" in worker and "remote_runner_mapping" in worker
