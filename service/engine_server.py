"""The engine alone, as an Open Inference Protocol (KServe v2) tensor server: for GPU hosts and remote fronts.

    python -m service.engine_server [--host 127.0.0.1] [--port 3001]

Each loaded model takes ``pixels`` (UINT8 [N, H, W, 3]) and returns ``logits``, ``embedding`` and
``features``, in JSON or binary tensors (service/protocol.py); ``tritonclient`` calls it as it calls
Triton, and Triton serving the same ONNX could stand in for it. It binds loopback unless told
otherwise, and refuses to listen beyond it without RESNET_ENGINE_TOKEN: every call but health then
needs ``Authorization: Bearer <token>``, checked before the body is read.
"""

import argparse
import ipaddress
import logging
import sys

import prometheus_client

from . import connections, oip
from .asgi import BodyTooLarge, bearer_ok, header, read_body, send_bytes, send_json
from .config import SETTINGS, Settings
from .engine import Engine
from .protocol import HEALTH, Protocol, TensorModel

log = logging.getLogger("resnet.engine")


class EngineServer:
    """The ASGI app: the protocol for every loaded model, behind the token and a body limit; Prometheus metrics."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.token, self.max_body = settings.engine_token, settings.engine_max_body_bytes
        self.max_in_flight, self.in_flight = settings.max_concurrency, 0
        models = {name: TensorModel(name, m.meta, engine, m.provider, settings.max_pixels)
                  for name, m in engine.models.items()}  # fmt: skip
        self.protocol = Protocol("resnet-serve-engine", models, log)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            return await _lifespan(receive, send)
        path, method = scope["path"], scope["method"]
        if not (path in HEALTH or bearer_ok(scope, self.token)):
            return await send_json(send, 401, {"error": "a valid bearer token is required"},
                                   [(b"www-authenticate", b"Bearer")])  # fmt: skip
        if path == "/metrics" and method == "GET":
            return await send_bytes(send, 200, prometheus_client.generate_latest(),
                                    prometheus_client.CONTENT_TYPE_LATEST.encode())  # fmt: skip
        if self.in_flight >= self.max_in_flight:  # bodies held in memory are bounded too
            return await send_json(send, 429, {"error": f"{self.max_in_flight} requests already in flight"},
                                   [(b"retry-after", b"1")])  # fmt: skip
        self.in_flight += 1
        try:
            body = await read_body(scope, receive, self.max_body)
            if body is not None:
                reply = await self.protocol(method, path, header(scope, oip.HEADER.encode()), body)
                await send_bytes(send, reply.status, reply.body, reply.content_type, reply.headers)
        except BodyTooLarge:
            await send_json(send, 413, {"error": f"request body exceeds {self.max_body:,} bytes"})
        finally:
            self.in_flight -= 1


async def _lifespan(receive, send) -> None:
    while (message := await receive())["type"] != "lifespan.shutdown":
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3001)
    args = parser.parse_args(argv)
    if not _loopback(args.host) and not SETTINGS.engine_token:
        parser.error(f"--host {args.host} reaches beyond this machine: set RESNET_ENGINE_TOKEN (a shared secret)")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = EngineServer(Engine(SETTINGS), SETTINGS)
    connections.install(SETTINGS.header_timeout_s, SETTINGS.max_header_bytes)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                timeout_keep_alive=SETTINGS.timeout_s)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
