"""The export writes a Triton model repository that Triton's own config schema accepts and that fits the graph."""

import json
import subprocess
import sys

import onnxruntime as ort
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tests.conftest import ROOT
from tests.server import DEFAULT

TYPES = {"tensor(uint8)": model_config_pb2.TYPE_UINT8, "tensor(float)": model_config_pb2.TYPE_FP32}


def test_repository_parses_with_tritons_schema_and_matches_the_graph(tmp_path) -> None:
    cmd = [sys.executable, "-m", "export.triton", str(DEFAULT), str(tmp_path), "--max-batch-size", "16"]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    folder = tmp_path / "shapes-resnet10"
    assert (folder / "1" / "model.onnx").read_bytes() == (DEFAULT / "model.onnx").read_bytes()
    config = text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.name == "shapes-resnet10" and config.backend == "onnxruntime" and config.max_batch_size == 16
    assert config.HasField("dynamic_batching")
    labels = json.loads((DEFAULT / "model.json").read_text())["labels"]
    assert json.loads(config.parameters["labels"].string_value) == labels
    session = ort.InferenceSession(str(folder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    graph = {t.name: t for t in [*session.get_inputs(), *session.get_outputs()]}
    declared = [*config.input, *config.output]
    assert {t.name for t in declared} == set(graph)
    for tensor in declared:
        onnx = graph[tensor.name]
        assert tensor.data_type == TYPES[onnx.type], tensor.name
        # Triton's dims leave the batch dimension out; -1 stands for every dynamic one
        assert [d if isinstance(d, int) else -1 for d in onnx.shape[1:]] == list(tensor.dims), tensor.name
