"""In-process pipeline timing: decode + preprocess + onnxruntime on files, no HTTP, one at a time.

python -m service.bench OUT.json MODEL_FOLDER IMAGE...    (run by `make bench`)
"""

import json
import statistics
import sys
import time
from pathlib import Path

from .catalog import Entry
from .inference import Model, Runner
from .preprocess import Limits, prepare


def main(out: Path, folder: Path, files: list[Path]) -> None:
    entry = Entry(folder.name, folder, json.loads((folder / "model.json").read_text()))
    model = Model(entry, ("CPUExecutionProvider",), 0, False)
    runner, pre = Runner({entry.name: model}), entry.meta["preprocessing"]
    data = [f.read_bytes() for f in files]
    rows = {}
    for policy in ("crop", "full"):
        latencies, pre_ms = [], []
        for _ in range(3):
            for blob in data:
                t0 = time.perf_counter()
                p = prepare(blob, policy, pre, Limits())
                t1 = time.perf_counter()
                runner([{"model": entry.name, "pixels": p.pixels}])
                latencies.append((time.perf_counter() - t0) * 1e3)
                pre_ms.append((t1 - t0) * 1e3)
        rows[policy] = {"p50_ms": statistics.median(latencies), "preprocess_p50_ms": statistics.median(pre_ms),
                        "images_per_s": 1e3 / statistics.mean(latencies)}  # fmt: skip
    out.write_text(json.dumps({"model": entry.name, "images": len(files), "pipeline": rows}, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), [Path(a) for a in sys.argv[3:]])
