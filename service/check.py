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
from .inference import Model


def main() -> int:
    for tag in SETTINGS.models:
        try:
            entry = catalog.load(tag)
            if SETTINGS.engine_url:
                entry.head()
            else:
                Model(entry, ("CPUExecutionProvider",), 1, False)
        except Exception as exc:
            print(f"error: model {tag} cannot be served: {exc}", file=sys.stderr)
            return 1
        print(f"ok: {entry.tag} ({entry.meta.precision}, {entry.meta.num_classes} classes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
