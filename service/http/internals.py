"""The internals of uvicorn and BentoML this project relies on, all in this one module; tests/test_internals.py
pins each, so that an upgrade which changes them fails there first.

Header deadlines uvicorn lacks: uvicorn (BentoML's server, on httptools) times out an idle keep-alive
connection only *after* a response. A client that connects and says nothing, or trickles its header
bytes, keeps its file descriptor for ever, and httptools buffers header bytes without a bound.
``install_header_deadlines`` arms a deadline when a connection opens and whenever a request begins,
disarms it once the request's headers are complete, and answers 408 (deadline) or 431 (too many header
bytes) as JSON before closing. It patches uvicorn's protocol class for the process, so it is called
where a server starts (the service's startup hook, the engine server's ``main``), never at import.

BentoML's CORS options: its CORS middleware sits inside the project's Guard, whose own answers must
carry the same headers; ``cors_options`` reads them from BentoML's configuration.

A second server in a worker whose main server is BentoML's: ``serve_socket`` gives each engine beside the fronts
a socket of its own (BentoML's one socket per service lets the kernel pick the worker, so a front could not
reach each engine), served by uvicorn in the same event loop, leaving the signals to the main server.
"""

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from http import HTTPStatus

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..errors import ApiError, reply

REQUEST_LINE_BYTES = 8192  # allowed beyond the header limit, for the method, URL and version


def _refuse(protocol, status: int, code: str, detail: str) -> None:
    """A JSON error on a connection whose request never reached the app, then close it."""
    if protocol.transport.is_closing():
        return
    if protocol.cycle is None or protocol.cycle.response_complete:  # nothing of an answer sent yet
        body = reply(ApiError(status, code, detail)).body
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
            f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        protocol.transport.write(head.encode() + body)
    protocol.transport.close()


def install_header_deadlines(header_timeout_s: float, max_header_bytes: int) -> None:
    """Patch uvicorn's httptools protocol (once per process); 0 leaves a limit off."""
    cls = HttpToolsProtocol
    if getattr(cls, "_resnet_deadlines", False) or not (header_timeout_s or max_header_bytes):
        return
    made, begin, complete, received, lost = (
        cls.connection_made,
        cls.on_message_begin,
        cls.on_headers_complete,
        cls.data_received,
        cls.connection_lost,
    )

    def disarm(self) -> None:
        handle, self._header_deadline, self._header_bytes = getattr(self, "_header_deadline", None), None, None
        if handle is not None:
            handle.cancel()

    def arm(self) -> None:
        disarm(self)
        self._header_bytes = 0
        if header_timeout_s:
            detail = f"the request headers did not arrive within {header_timeout_s:g} s"
            self._header_deadline = self.loop.call_later(header_timeout_s, _refuse, self, 408, "header_timeout", detail)

    def connection_made(self, transport) -> None:
        made(self, transport)
        arm(self)

    def on_message_begin(self) -> None:
        arm(self)
        begin(self)

    def on_headers_complete(self) -> None:
        disarm(self)
        complete(self)

    def data_received(self, data: bytes) -> None:
        received(self, data)
        if getattr(self, "_header_bytes", None) is not None:  # still inside a request's headers
            self._header_bytes += len(data)
            if max_header_bytes and self._header_bytes > max_header_bytes + REQUEST_LINE_BYTES:
                disarm(self)
                _refuse(self, 431, "headers_too_large", f"more than {max_header_bytes:,} bytes of header fields")

    def connection_lost(self, exc) -> None:
        disarm(self)
        lost(self, exc)

    for hook in (connection_made, on_message_begin, on_headers_complete, data_received, connection_lost):
        setattr(cls, hook.__name__, hook)
    cls._resnet_deadlines = True


def cors_options() -> dict | None:
    """BentoML's ``http.cors`` settings as Starlette's CORSMiddleware takes them, or None where CORS is off."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    if not BentoMLContainer.http.cors.enabled.get():
        return None
    return dict(BentoMLContainer.access_control_options.get())


class _Beside(uvicorn.Server):
    """uvicorn's server without its signal handlers: the worker's main server owns them and stops this one."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


async def serve_socket(app, path: str, keep_alive_s: float) -> Callable[[], Awaitable[None]]:
    """Serve ``app`` on the unix socket ``path`` (one left by a predecessor is replaced) once this returns; the
    coroutine function returned stops it."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    # log_config and log_level None: the worker's logging stays as BentoML configured it
    options = {"lifespan": "off", "access_log": False, "log_config": None, "log_level": None}
    server = _Beside(uvicorn.Config(app, uds=path, timeout_keep_alive=keep_alive_s, **options))
    serving = asyncio.get_running_loop().create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()  # its failure, raised here
            raise RuntimeError(f"the server on {path} stopped before it started")
        await asyncio.sleep(0.01)

    async def stop() -> None:
        server.should_exit = True
        await serving

    return stop
