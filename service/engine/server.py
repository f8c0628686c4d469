"""The engine alone, as an Open Inference Protocol (KServe v2) tensor server: for GPU hosts and remote fronts.

    python -m service.engine.server [--host 127.0.0.1] [--port 3001]

Each loaded model takes ``pixels`` (UINT8 [N, H, W, 3]) and returns ``logits``, ``embedding`` and
``features``, in JSON or binary tensors (service/protocol/); ``tritonclient`` calls it as it calls
Triton, and Triton serving the same ONNX could stand in for it. It binds loopback unless told
otherwise, and refuses to listen beyond it without RESNET_ENGINE_TOKEN: every call but health then
needs ``Authorization: Bearer <token>``, checked before the body is read.
"""

import argparse
import asyncio
import json
import logging
import sys

import prometheus_client

from ..asgi import BodyTooLarge, bearer_ok, header, is_loopback, read_body, send_reply
from ..config import Settings
from ..errors import ApiError, Reply, json_reply, reply
from ..http.internals import install_header_deadlines
from ..protocol import codec
from ..protocol.paths import DESIRED, HEALTH
from ..protocol.server import Router, Table
from ..repository import SHARED, Desired, Keeper, Repository, split
from ..rollout import within
from .local import LocalEngine
from .tensor_model import TensorModel

log = logging.getLogger("resnet.engine")


class EngineServer:
    """The ASGI app: the protocol for every loaded model version, behind the token and a body limit; Prometheus
    metrics. The versions loaded follow the desired set (service/repository.py), which the repository API changes."""

    def __init__(self, settings: Settings, device: int = 0) -> None:
        self.token, self.max_body = settings.engine_token, settings.engine_max_body_bytes
        fronts = settings.front_workers * settings.max_concurrency
        self.max_in_flight, self.in_flight = settings.engine_max_in_flight or fronts, 0
        repository = Repository(settings.state_dir, "engine")
        desired = repository.read(list(settings.models))
        self.threads = settings.thread_plan("engine")
        self.threads.apply(log)  # before the runtime or numpy's BLAS starts a thread
        self.engine = LocalEngine(settings, self.threads.runtime, device, desired.tags)
        self.max_pixels = settings.max_pixels
        self.keeper = Keeper(repository, self.engine.load, self.apply, settle_s=0)
        self.router = Router("resnet-serve-engine", self._table(desired), self.engine.ready, self.keeper)
        self.desired = desired
        repository.applied(desired)
        self.watching: asyncio.Task | None = None

    def _table(self, desired: Desired) -> Table:
        """The set's versions, and those just unloaded that the engine still holds (engine/local.py keeps them for
        the request timeout): a front elsewhere may still name them until it follows the change."""
        models = {tag: TensorModel(tag, m.meta, self.engine, self.max_pixels) for tag, m in self.engine.models.items()}
        return Table.of(
            [(*split(tag), models[tag]) for tag in desired.tags if tag in models],
            {name: desired.split(name) for name in desired.defaults},
            {split(tag): model for tag, model in models.items() if tag not in desired.tags},
        )

    async def apply(self, desired: Desired) -> None:
        await self.engine.apply(desired.tags)
        self.router.table, self.desired = self._table(desired), desired

    def watch(self) -> None:
        """Follow the desired set that other processes change (in the server's event loop), with decoding and file
        locks on the thread plan's executor."""
        if self.watching is None:
            loop = asyncio.get_running_loop()
            loop.set_default_executor(self.threads.executor())
            self.watching = loop.create_task(self.keeper.watch())

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            return await _lifespan(receive, send, self.watch)
        try:
            answer = await self._answer(scope, receive)
        except Exception as exc:
            answer = reply(exc, protocol=True, where=scope["path"])
        if answer is not None:
            await send_reply(send, answer)

    async def _answer(self, scope, receive) -> Reply | None:
        """The reply, or None when the client left before its body was in."""
        path, method = scope["path"], scope["method"]
        if not (path in HEALTH or bearer_ok(scope, self.token)):
            raise ApiError(401, "unauthorized", "a valid bearer token is required")
        if path == "/metrics" and method == "GET":
            return Reply(200, prometheus_client.generate_latest(), prometheus_client.CONTENT_TYPE_LATEST.encode())
        if path == DESIRED and method == "GET":
            return json_reply(200, {"fresh": self.desired.generation == 0, **self.desired.shared()})
        if self.in_flight >= self.max_in_flight:  # bodies held in memory are bounded too
            raise ApiError(429, "too_many_requests", f"{self.max_in_flight} requests already in flight")
        self.in_flight += 1
        try:
            body = await read_body(scope, receive, self.max_body)
            if body is None:
                return None
            if path == DESIRED and method == "PUT":
                return json_reply(200, (await self.keeper.adopt(_shared(body))).shared())
            return await self.router(method, path, header(scope, codec.HEADER.encode()), body)
        except BodyTooLarge:
            raise ApiError(413, "body_too_large", f"request body exceeds {self.max_body:,} bytes") from None
        finally:
            self.in_flight -= 1


def _shared(body: bytes) -> dict:
    """A fleet's set as a front sends it (GET DESIRED's shape); 400 for anything else."""
    try:
        shared = json.loads(body, parse_constant=_no_constant)
        desired = Desired((), main="").adopted(shared)
        tags = set(desired.tags)
        ok = set(shared) == {"tags", *SHARED} and all(isinstance(t, str) and ":" in t for t in desired.tags)
        ok = ok and all(isinstance(t, str) and t in tags for t in (*desired.defaults.values(), *desired.previous))
        ok = ok and all(within(p, 100) for p in desired.traffic.values()) and set(desired.traffic) <= tags
        ok = ok and all(within(r, 1) for r in desired.shadows.values()) and set(desired.shadows) <= tags
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        ok = False
    if not ok:
        raise ApiError(400, "bad_request", f"send the set as GET {DESIRED} gives it")
    return shared


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number")


async def _lifespan(receive, send, started) -> None:
    while (message := await receive())["type"] != "lifespan.shutdown":
        if message["type"] == "lifespan.startup":
            started()
            await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3001)
    args, settings = parser.parse_args(argv), Settings()
    if not is_loopback(args.host) and not settings.engine_token:
        parser.error(f"--host {args.host} reaches beyond this machine: set RESNET_ENGINE_TOKEN (a shared secret)")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = EngineServer(settings)
    install_header_deadlines(settings.header_timeout_s, settings.max_header_bytes)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=settings.timeout_s,
    )


if __name__ == "__main__":
    sys.exit(main())
