"""The Open Inference Protocol on the public port, through clients nobody here wrote: tritonclient and kserve."""

import asyncio
import io

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from PIL import Image
from tritonclient.utils import InferenceServerException

from models.shapes import CLASSES, sample
from tests.conftest import IMAGES, ROOT

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("server")]
STAR = (ROOT / "docs" / "star.png").read_bytes()


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def images_input(blobs: list[bytes]) -> triton.InferInput:
    """Encoded images travel as binary tensor data (JSON strings cannot carry them)."""
    tensor = triton.InferInput("images", [len(blobs)], "BYTES")
    tensor.set_data_from_numpy(np.array(blobs, dtype=object), binary_data=True)
    return tensor


def client(url: str) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url.removeprefix("http://"))


def test_tritonclient_health_and_metadata(url) -> None:
    c = client(url)
    assert c.is_server_live() and c.is_server_ready()
    assert "binary_tensor_data" in c.get_server_metadata()["extensions"]
    index = {m["name"] for m in c.get_model_repository_index()}
    assert index == {"shapes-resnet10", "shapes-resnet10-image", "shapes-resnet10-int8", "shapes-resnet10-int8-image"}
    (version,) = c.get_model_metadata("shapes-resnet10")["versions"]  # the model store's version
    assert c.is_model_ready("shapes-resnet10-image") and c.is_model_ready("shapes-resnet10", version)
    assert not c.is_model_ready("shapes-resnet10", "1")
    meta = c.get_model_metadata("shapes-resnet10-image", version)
    assert meta["inputs"] == [{"name": "images", "datatype": "BYTES", "shape": [-1]}]
    assert meta["parameters"]["labels"] == list(CLASSES), "a client can name the classes from the metadata"
    with pytest.raises(InferenceServerException, match="unknown model"):
        c.get_model_metadata("resnet9000")


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_classifies_a_batch_of_images_like_classify(url, binary: bool) -> None:
    """A batch of mixed-size images in one request; outputs as binary tensors or as JSON."""
    rng = np.random.default_rng(21)
    shapes = [sample(rng, size=(int(rng.integers(120, 500)), int(rng.integers(120, 500))), label=i) for i in range(6)]
    blobs = [STAR, *(png(s.image) for s in shapes)]  # mixed sizes: several shape buckets in one request
    wanted = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("probabilities", "labels")]
    result = client(url).infer("shapes-resnet10-image", [images_input(blobs)], outputs=wanted, parameters={"top_k": 3})
    probabilities = result.as_numpy("probabilities")
    labels = np.vectorize(lambda t: t.decode() if isinstance(t, bytes) else t)(result.as_numpy("labels"))
    assert probabilities.shape == (7, 6) and labels.shape == (7, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    for blob, row, top in zip(blobs, probabilities, labels, strict=True):
        single = httpx.post(f"{url}/classify", files={"image": ("x.png", blob)}, data={"top_k": "3"}).json()
        assert [p["label"] for p in single["predictions"]] == list(top)
        assert abs(single["predictions"][0]["probability"] - row.max()) < 1e-5
    assert labels[0][0] == "star"


def test_tritonclient_tensor_model(url) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (2, 112, 144, 3), dtype=np.uint8)
    tensor = triton.InferInput("pixels", list(pixels.shape), "UINT8")
    tensor.set_data_from_numpy(pixels)
    result = client(url).infer("shapes-resnet10", [tensor])
    assert result.as_numpy("logits").shape == (2, 6) and result.as_numpy("features").shape == (2, 128, 7, 9)


@pytest.mark.parametrize(
    ("blob", "status"),
    [(b"definitely not an image", 415), (png(Image.new("RGB", (1, 10000))), 422), (b"", 400)],
)
def test_bad_images_are_4xx_with_the_protocols_error(url, blob: bytes, status: int) -> None:
    with pytest.raises(InferenceServerException) as info:
        client(url).infer("shapes-resnet10-image", [images_input([STAR, blob])])
    assert info.value.status() == str(status) and info.value.message()
    r = httpx.post(f"{url}/v2/models/shapes-resnet10-image/infer", content=b'{"inputs": 3}')
    assert r.status_code == 400 and set(r.json()) == {"error"}


def test_kserve_client(url) -> None:
    async def go() -> tuple:
        rest = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
        live, ready = await rest.is_server_live(url), await rest.is_server_ready(url)
        model_ready = await rest.is_model_ready(url, "shapes-resnet10-image")
        photo = (IMAGES / "chelsea.png").read_bytes()
        tensor = InferInput("images", [2], "BYTES")
        tensor.set_data_from_numpy(np.array([STAR, photo], dtype=object), binary_data=True)
        request = InferRequest("shapes-resnet10-image", infer_inputs=[tensor], parameters={"top_k": 2})
        response = await rest.infer(url, request, model_name="shapes-resnet10-image")
        return live, ready, model_ready, {o.name: o.as_numpy() for o in response.outputs}

    live, ready, model_ready, outputs = asyncio.run(go())
    assert live and ready and model_ready
    assert outputs["probabilities"].shape == (2, 6) and outputs["labels"].shape == (2, 2)
    assert outputs["labels"][0][0] in (b"star", "star")
