"""The engine as a BentoML service beside the fronts: one worker per GPU, started and restarted by BentoML.

``bentoml serve service.service:Classifier`` runs it with the fronts; where RESNET_ENGINES asks for
engines (one per GPU by default) each worker loads the models, else its one worker stays idle. Each
engine serves the Open Inference Protocol on a socket of its own (config.engine_socket), so that every
front worker reaches every engine and balances its calls over them (service/engine/remote.py); on
BentoML's socket, which the kernel hands to any one worker, ``/v2/...`` goes to the engine server's app
too, everything else to BentoML's own health and metrics routes. It declares no BentoML API (nothing
there takes a pickle).
"""

import logging

import bentoml

from ..config import Settings, engine_device, engine_socket
from ..http.internals import install_header_deadlines, serve_socket
from ..protocol.paths import is_v2

log = logging.getLogger("resnet.engine")
DECLARED = Settings()  # what BentoML is told at import: workers, timeouts, request layers


@bentoml.service(
    name="resnet-engine",
    workers=max(1, DECLARED.engines),
    traffic={"timeout": DECLARED.timeout_s + 5},
    # BentoML's per-request metrics would count the fronts' internal calls and heartbeats at a cost per call; the
    # engine's own metrics (batch sizes, model time) reach the fronts' /metrics through the shared multiprocess store.
    metrics={"enabled": False},
    **DECLARED.request_layers(),
)
class EngineService:
    """Worker *i* runs on GPU *i* modulo the GPUs (onnxruntime's ``device_id``); every front worker's requests reach
    one of them."""

    def __init__(self) -> None:
        self.settings, self.server = Settings(), None  # from the environment the deployment shared
        self.stop = None  # its own socket's server
        if not self.settings.engines:
            log.info("engine idle: the model runs in the front workers (RESNET_ENGINES=0)")
            return
        from .server import EngineServer  # onnxruntime: only in the engine's own workers

        self.index = ((bentoml.server_context.worker_index or 1) - 1) % self.settings.engines  # circus counts from 1
        self.server = EngineServer(self.settings, device=engine_device(self.index))

    @bentoml.on_startup
    async def start(self) -> None:
        """As on the fronts: uvicorn's connections get header deadlines before the worker accepts one; the desired
        set of models followed; and the engine's own socket served."""
        s = self.settings
        install_header_deadlines(s.header_timeout_s, s.max_header_bytes)
        if self.server is not None:
            self.server.watch()
            self.stop = await serve_socket(self.server, engine_socket(self.index), s.timeout_s)

    @bentoml.on_shutdown
    async def close(self) -> None:
        if self.stop is not None:
            await self.stop()


class ProtocolRoutes:
    """ASGI middleware: the Open Inference Protocol's routes to the engine server, the rest to BentoML."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        # BentoML builds the ASGI app apart from the instance it creates at start-up: this is where they meet
        server = bentoml.get_current_service().server if scope["type"] == "http" else None
        if server is not None and is_v2(scope["path"]):
            return await server(scope, receive, send)
        await self.app(scope, receive, send)


EngineService.add_asgi_middleware(ProtocolRoutes)
