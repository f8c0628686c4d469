"""A Triton Inference Server model repository for an exported model: the same ONNX, served by Triton.

    python -m export.triton MODEL_FOLDER OUT_DIR [--max-batch-size 32] [--name NAME]

writes OUT_DIR/NAME/config.pbtxt and OUT_DIR/NAME/1/model.onnx (onnxruntime backend, dynamic
height and width, dynamic batching). Triton then answers the same Open Inference Protocol requests
as `python -m service.engine.server`, so a front (RESNET_ENGINE_URL) or any v2 client can use it.
"""

import argparse
import json
import shutil
from pathlib import Path

CONFIG = """name: "{name}"
backend: "onnxruntime"
max_batch_size: {max_batch_size}
input [
  {{ name: "pixels" data_type: TYPE_UINT8 format: FORMAT_NHWC dims: [ -1, -1, 3 ] }}
]
output [
  {{ name: "logits" data_type: TYPE_FP32 dims: [ {classes} ] }},
  {{ name: "embedding" data_type: TYPE_FP32 dims: [ {channels} ] }},
  {{ name: "features" data_type: TYPE_FP32 dims: [ {channels}, -1, -1 ] }}
]
dynamic_batching {{ max_queue_delay_microseconds: 100 }}
instance_group [ {{ kind: KIND_AUTO count: 1 }} ]
parameters {{ key: "labels" value: {{ string_value: {labels} }} }}
"""


def config(meta: dict, name: str, max_batch_size: int) -> str:
    """config.pbtxt text for a model's metadata (Triton's dims leave out the batch dimension)."""
    return CONFIG.format(
        name=name,
        max_batch_size=max_batch_size,
        classes=meta["num_classes"],
        channels=meta["embedding_dim"],
        labels=json.dumps(json.dumps(meta["labels"])),
    )


def write_repository(folder: Path, out: Path, max_batch_size: int = 32, name: str | None = None) -> Path:
    """``out/name`` with config.pbtxt and version 1 of the graph; returns that folder."""
    meta = json.loads((folder / "model.json").read_text())
    name = name or meta["name"]
    target = out / name
    (target / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(folder / "model.onnx", target / "1" / "model.onnx")
    (target / "config.pbtxt").write_text(config(meta, name, max_batch_size))
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="an exported model: model.onnx + model.json")
    parser.add_argument("out", type=Path, help="the Triton model repository to write into")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--name", help="the model's name in Triton (default: the exported name)")
    args = parser.parse_args()
    print(write_repository(args.folder, args.out, args.max_batch_size, args.name))


if __name__ == "__main__":
    main()
