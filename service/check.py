"""Pre-flight check: load every configured model as the engine would, before serving.

    python -m service.check        (run by `make serve` and the container before `bentoml serve`)

It checks every model the service will load: RESNET_MODELS, or the desired set kept in RESNET_STATE_DIR when one is
set. A missing model, an unreadable ONNX file, metadata that contradicts the graph, an unknown RESNET_RUNTIME, CUDA
asked for with RESNET_REQUIRE_GPU=1 but not usable, a CUDA engine in every one of several front workers, a
RESNET_STATE_DIR that cannot be written, an engine list (RESNET_ENGINE_URL) that does not parse, or a
RESNET_GRPC_PORT another process holds ends here with a clear message and exit status 1; inside `bentoml serve` the
worker would only be restarted again and again. A front with a remote engine (RESNET_ENGINE_URL) needs only each
model's metadata and linear head, never its ONNX file.
"""

import socket
import sys

from . import catalog
from .config import CUDA, Settings
from .engine import addresses
from .repository import Repository


def load(tag: str, settings: Settings) -> catalog.Entry:
    """The model as the service will load it: metadata and head; and, with the engine on this host, its session on
    the providers the service asks for."""
    entry = catalog.load(tag)
    entry.head()
    if settings.engine_url:
        return entry
    from .engine import runtimes  # onnxruntime and OpenVINO: only where the model runs in this process
    from .engine.sessions import Sessions

    sessions = Sessions(entry, settings.providers, 1, settings.require_gpu)
    provider = runtimes.load(entry, sessions, settings.runtime, 1).provider
    if provider == CUDA and not settings.engines and settings.front_workers > 1:
        raise RuntimeError(
            f"RESNET_ENGINES=0 with RESNET_FRONT_WORKERS={settings.front_workers} would load the model on the GPU "
            "once per front worker: leave RESNET_ENGINES unset (one engine per GPU beside the fronts), or serve "
            "with RESNET_FRONT_WORKERS=1"
        )
    return entry


def bind(port: int) -> None:
    """Bind ``port`` for a moment on every interface, as the gRPC server will (OSError when it is taken)."""
    try:
        sock = socket.socket(socket.AF_INET6)  # dual-stack: taken on IPv4 is taken here too
    except OSError:  # a host without IPv6
        sock = socket.socket(socket.AF_INET)
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("::" if sock.family == socket.AF_INET6 else "0.0.0.0", port))


def main() -> int:
    settings = Settings()
    try:
        addresses.parse(settings.engine_url)
    except addresses.BadAddress as exc:
        print(f"error: RESNET_ENGINE_URL cannot be used: {exc}", file=sys.stderr)
        return 1
    if settings.grpc_port:
        try:
            bind(settings.grpc_port)
        except OSError as exc:
            print(
                f"error: RESNET_GRPC_PORT {settings.grpc_port} cannot be bound ({exc.strerror}): stop what holds"
                " it, choose another port, or set RESNET_GRPC_PORT=0 to serve without gRPC",
                file=sys.stderr,
            )
            return 1
    tags = settings.models
    if settings.state_dir:
        try:
            tags = Repository(settings.state_dir, "check").read(list(settings.models)).tags
        except (OSError, LookupError, ValueError) as exc:
            print(f"error: the desired set of models in RESNET_STATE_DIR cannot be kept: {exc}", file=sys.stderr)
            return 1
    for tag in tags:
        try:
            entry = load(tag, settings)
        except Exception as exc:
            print(f"error: model {tag} cannot be served: {exc}", file=sys.stderr)
            return 1
        print(f"ok: {entry.tag} ({entry.meta.precision}, {entry.meta.num_classes} classes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
