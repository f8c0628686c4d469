"""The export writes a Triton model repository that Triton's own config schema accepts and that fits the graph."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest
import tritonclient
from google.protobuf import text_format

from tests.conftest import ROOT
from tests.server import DEFAULT

pytestmark = pytest.mark.slow


def triton_schema():
    """Triton's model-config schema as tritonclient ships it (tritonclient/grpc/model_config_pb2.py), loaded on
    its own: the tritonclient.grpc package would also register protocol messages that kserve's client registers."""
    path = Path(tritonclient.__file__).parent / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


model_config_pb2 = triton_schema()

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
