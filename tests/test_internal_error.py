"""An error inside the model is a 500 that says so, with a request id in the answer and the traceback in
the log, never a 503 that invites a retry; other requests go on. Provoked for real: a graph that fails
at run time for bright images (a Gather indexed by the brightest pixel, out of bounds above 199)."""

import io
import re
import shutil

import httpx
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from PIL import Image

from tests.server import DEFAULT, import_models, serve

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("internal")]


def failing_copy(folder) -> None:
    """The default graph, its logits plus table[max(pixels)] for a 200-entry table of zeros."""
    model = onnx.load(folder / "model.onnx")
    graph = model.graph
    (producer,) = [n for n in graph.node if "logits" in n.output]
    producer.output[list(producer.output).index("logits")] = "logits_raw"
    graph.initializer.append(numpy_helper.from_array(np.zeros(200, np.float32), "table"))
    graph.node.extend(
        [
            helper.make_node("ReduceMax", ["pixels"], ["brightest"], keepdims=0),
            helper.make_node("Cast", ["brightest"], ["index"], to=onnx.TensorProto.INT64),
            helper.make_node("Gather", ["table", "index"], ["offset"]),
            helper.make_node("Add", ["logits_raw", "offset"], ["logits"]),
        ]
    )
    onnx.save(model, folder / "model.onnx")


def png(colour: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (160, 112), colour).save(buf, "PNG")
    return buf.getvalue()


def test_a_model_failing_at_run_time_is_a_500_with_a_request_id(tmp_path) -> None:
    folder = tmp_path / "shapes-resnet10"
    shutil.copytree(DEFAULT, folder)
    failing_copy(folder)
    import_models(tmp_path / "home", folder)
    log = tmp_path / "server.log"
    with serve(tmp_path / "home", log) as url:
        dark = httpx.post(f"{url}/classify", files={"image": ("d.png", png("black"))}, timeout=30)
        assert dark.status_code == 200, dark.text
        bright = httpx.post(f"{url}/classify", files={"image": ("b.png", png("white"))}, timeout=30)
        body = bright.json()
        assert bright.status_code == 500 and body["error"] == "internal" and "retry-after" not in bright.headers
        assert re.fullmatch(r"[0-9a-f]{12}", body["request_id"]) and "Traceback" not in bright.text
        assert httpx.post(f"{url}/classify", files={"image": ("d.png", png("black"))}, timeout=30).status_code == 200
        v2 = httpx.post(
            f"{url}/v2/models/shapes-resnet10/infer",
            json={"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 16, 16, 3], "data": [255] * 768}]},
        )
        assert v2.status_code == 500 and "request_id" in v2.json()["error"]
    text = log.read_text()
    assert body["request_id"] in text and "Traceback" in text and "Gather" in text, "the log has the traceback"
