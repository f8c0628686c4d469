"""Export: every variant's ONNX matches eager torch; the CLI's options, refusals and model store."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

import contract
import models
from export.parity import MIN_TOP1, TOLERANCE, default_shapes, images
from export.pipeline import NO_REFERENCE, ExportError, ExportSpec, build, run
from export.reference import variants
from export.session import session
from tests.conftest import IMAGES, ROOT

CIFAR = {"preact_resnet164", "preact_resnet1001", "wrn28_10"}
TINY_ARCH = ["--arch", "resnet", "--block", "basic", "--layers", "1,1,1,1"]


def _small_shapes(name: str) -> list[tuple[int, int, int]]:
    if name in CIFAR:
        return [(1, 32, 32), (3, 24, 40), (1, 45, 37)]
    return [(1, 64, 64), (3, 61, 97), (1, 96, 128)]


# An untrained 1001-layer net amplifies rounding along its depth (2e-3 of the largest logit
# measured); its parity is still checked, against this looser bound.
DEEP_TOLERANCE = {"preact_resnet1001": 1e-2}


def test_an_untrained_net_is_the_same_net_at_every_export() -> None:
    """--random-init draws one net, not a new one each time (an untrained net's int8 and bf16 agreement, and so
    the runtime `auto` picks, depend on the draw), and leaves the caller's random state alone."""
    spec = ExportSpec(variant="resnet18", random_init=True, num_classes=10)
    torch.manual_seed(1)
    a, _ = build(spec)
    torch.manual_seed(2)
    (b, _), after = build(spec), torch.rand(1)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    torch.manual_seed(2)
    assert torch.equal(after, torch.rand(1)), "the caller's stream goes on untouched"


@pytest.mark.slow
@pytest.mark.parametrize("name", models.list_models())
def test_every_variant_exports_with_parity(name: str, tmp_path) -> None:
    tolerance = DEEP_TOLERANCE.get(name, TOLERANCE["fp32"])
    spec = ExportSpec(
        variant=name,
        random_init=True,
        num_classes=10,
        parity_shapes=_small_shapes(name),
        output=tmp_path,
        to_store=False,
        tolerance=tolerance,
        runtimes=False,  # timed once, below and in tests/test_runtimes.py
        reference_images=0,  # fitted once, in tests/test_reference.py
    )
    torch.manual_seed(0)  # random weights: the parity error of a deep net varies with them (ResNet-152: 1.4e-3 once)
    (folder,) = run(spec)
    meta = json.loads((folder / "model.json").read_text())
    assert meta["trained"] is False and meta["architecture"] == name
    assert meta["parity"]["worst"]["max_rel"] <= tolerance
    assert meta["parity"]["worst"]["top1"] == 1.0
    assert [r["shape"] for r in meta["parity"]["shapes"]] == [list(s) for s in _small_shapes(name)]


def test_default_parity_shapes_cover_the_required_cases() -> None:
    shapes = default_shapes(224)
    assert len(shapes) >= 5
    assert any(b > 1 for b, _, _ in shapes)
    assert any(h != w for _, h, w in shapes)
    assert any(h % 32 or w % 32 for _, h, w in shapes)
    assert any(max(h, w) >= 512 for _, h, w in shapes)


def cli(*args: str, home, check: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "BENTOML_HOME": str(home)}
    proc = subprocess.run(
        [sys.executable, "-m", "export", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def photo_folder(folder: Path, per_photo: int) -> Path:
    """Crops and variants of the shared photos as JPEG files: a user's folder of reference images."""
    folder.mkdir()
    originals = [Image.open(p) for p in sorted(IMAGES.iterdir())]
    for i, img in enumerate(variants(originals, per_photo)):
        img.save(folder / f"{i:03d}.jpg")
    return folder


@pytest.mark.slow
def test_cli_end_to_end(tmp_path) -> None:
    home, out = tmp_path / "home", tmp_path / "out"
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"thing {i}" for i in range(4)) + "\n")
    photos = photo_folder(tmp_path / "photos", 20)
    proc = cli(
        "resnet18",
        "--random-init",
        "--num-classes",
        "4",
        "--labels",
        str(labels),
        "--name",
        "r18",
        "--precision",
        "fp32",
        "fp16",
        "int8",
        "--policy",
        "full",
        "--reference-dir",
        str(photos),
        "--reference-images",
        "120",
        "--output",
        str(out),
        home=home,
        check=True,
    )
    stages = ("build", "export to ONNX", "parity fp32", "parity int8", "quantise", "speed of", "reference", "save")
    for stage in stages:
        assert stage in proc.stderr
    for entry, precision in (("r18", "fp32"), ("r18-fp16", "fp16"), ("r18-int8", "int8")):
        meta = contract.read(out / entry)
        assert meta.precision == precision and meta.labels[3] == "thing 3"
        assert meta.reference.images + meta.reference.held_out == 120 and (out / entry / "reference.npz").is_file()
        assert meta.reference.source == "120 images of photos/"
        assert meta.preprocessing.policy == "full" and meta.trained is False
        assert len(meta.parity["shapes"]) == 5 and meta.parity["tolerance"]["min_top1"] == MIN_TOP1[precision]
        assert (home / "models" / entry).is_dir(), "saved to the BentoML model store"
        # every precision timed side by side, the same figures in each model's metadata
        assert set(meta.speed.ms_per_image) == {"fp32", "fp16", "int8"} and meta.speed.batches == [1, 8]
        assert all(ms > 0 for row in meta.speed.ms_per_image.values() for ms in row)
        slower = [
            b
            for b, a, f in zip(
                meta.speed.batches, meta.speed.ms_per_image[precision], meta.speed.ms_per_image["fp32"], strict=True
            )
            if a > f
        ]
        assert len([n for n in meta.notes if "slower than fp32" in n]) == len(slower)
    proto = onnx.load(str(out / "r18" / "model.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version >= 18
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [bool(d.dim_param) for d in dims] == [True, True, True, False], "batch, height, width dynamic"
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [o.name for o in proto.graph.output] == ["logits", "embedding", "features"]
    fp16 = json.loads((out / "r18-fp16" / "model.json").read_text())["parity"]["worst"]
    assert fp16["max_rel"] <= TOLERANCE["fp16"]
    sess = session(out / "r18-int8" / "model.onnx")
    logits = sess.run(["logits"], {"pixels": images((2, 77, 141))})[0]
    assert logits.shape == (2, 4) and np.isfinite(logits).all()


@pytest.mark.slow
def test_a_1000_class_model_gets_imagenet_labels_from_the_repository(tmp_path) -> None:
    (folder,) = run(
        ExportSpec(
            arch={"block": "basic", "layers": [1, 1, 1, 1]},
            random_init=True,
            name="in1k",
            parity_shapes=[(1, 64, 64)],
            output=tmp_path,
            to_store=False,
            reference_images=0,
        )
    )
    meta = contract.read(folder)
    assert meta.num_classes == 1000 and meta.labels[:2] == ["tench", "goldfish"] and meta.labels[-1] == "toilet tissue"
    assert meta.speed is None, "one precision: nothing to compare"


@pytest.mark.slow
def test_cli_help_documents_every_option() -> None:
    proc = subprocess.run([sys.executable, "-m", "export", "--help"], cwd=ROOT, capture_output=True, text=True)
    for option in (
        "--weights",
        "--num-classes",
        "--labels",
        "--name",
        "--precision",
        "--opset",
        "--policy",
        "--random-init",
        "--arch",
        "--groups",
        "--width-per-group",
        "--output",
    ):
        assert option in proc.stdout


@pytest.mark.slow
def test_cli_ad_hoc_architecture(tmp_path) -> None:
    proc = cli(
        "--arch",
        "resnet",
        "--block",
        "bottleneck",
        "--layers",
        "1,1,1,1",
        "--groups",
        "32",
        "--width-per-group",
        "4",
        "--random-init",
        "--num-classes",
        "3",
        "--name",
        "adhoc",
        "--precision",  # the architecture is what is tested here: int8 and the runtime record are, end to end, above
        "fp32",
        "--no-runtimes",
        "--output",
        str(tmp_path / "out"),
        home=tmp_path / "home",
        check=True,
    )
    meta = json.loads((tmp_path / "out" / "adhoc" / "model.json").read_text())
    assert json.loads(meta["architecture"])["groups"] == 32
    assert meta["reference"] is None, "no reference images given: no statistics from shapes for a model of photos"
    assert NO_REFERENCE in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["resnet18"], 2, "no --weights given"),
        (["resnet51", "--random-init"], 2, "unknown model 'resnet51'"),
        (["resnet18", "--weights", "missing.pth"], 3, "checkpoint not found"),
        ([*TINY_ARCH, "--random-init", "--tolerance", "1e-15"], 4, "fp32 parity failed"),
        (["resnet18", "--random-init", "--opset", "17"], 2, "below 18"),
    ],
)
def test_cli_refusals(tmp_path, args, code, message) -> None:
    proc = cli(*args, "--output", str(tmp_path / "out"), home=tmp_path / "home")
    assert proc.returncode == code, proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "home" / "models").exists()


def test_mismatched_weights_are_refused(tmp_path) -> None:
    path = tmp_path / "r18.safetensors"
    models.save_checkpoint(models.create("resnet18", num_classes=5), path)
    with pytest.raises(ExportError, match=r"shape: fc\.weight") as info:
        run(ExportSpec(variant="resnet18", weights=path, num_classes=7, to_store=False))
    assert info.value.code == 3


@pytest.mark.slow
def test_store_import_is_keyed_by_every_file_so_new_metadata_is_a_new_entry(tmp_path) -> None:
    folder, home = tmp_path / "m", tmp_path / "home"
    shutil.copytree(ROOT / "default_model" / "shapes-resnet10", folder)
    env = {**os.environ, "BENTOML_HOME": str(home)}

    def store() -> str:
        cmd = [sys.executable, "-m", "export.store", str(folder)]
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout.split()[-1]

    first = store()
    assert store() == first, "the same files: the same entry"
    meta = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**meta, "notes": ["re-exported"]}))
    second = store()
    assert second != first, "same graph, new metadata: a new entry, which `latest` then names"
    assert json.loads((home / "models" / "shapes-resnet10" / second.split(":")[1] / "model.json").read_text())["notes"]
