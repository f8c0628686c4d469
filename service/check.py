"""Pre-flight check: load every configured model as the engine would, before serving.

    python -m service.check        (run by `make serve` and the container before `bentoml serve`)

A missing model, an unreadable ONNX file or metadata that contradicts the graph ends here with a
clear message and exit status 1; inside `bentoml serve` the worker would only be restarted again
and again. A front with a remote engine (RESNET_ENGINE_URL) needs only each model's metadata and
linear head, never its ONNX file.
"""

import sys

from . import catalog
from .config import SETTINGS


def main() -> int:
    for tag in SETTINGS.models:
        try:
            entry = catalog.load(tag)
            entry.head()
            if not SETTINGS.engine_url:
                from .engine.sessions import Sessions  # onnxruntime: only where the model runs in this process

                Sessions(entry, ("CPUExecutionProvider",), 1, False)
        except Exception as exc:
            print(f"error: model {tag} cannot be served: {exc}", file=sys.stderr)
            return 1
        print(f"ok: {entry.tag} ({entry.meta.precision}, {entry.meta.num_classes} classes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
