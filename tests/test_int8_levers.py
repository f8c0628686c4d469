"""The int8 lever study (export/int8_levers.py) on the trained default model: every lever quantised and timed against
fp32 in the same rounds, the ratios paired, and the agreement of each with fp32."""

import shutil

import onnx
import pytest
from onnxruntime.quantization import QuantFormat

from contract.metadata import cpu_isa
from export import int8_levers
from export.parity import images
from export.variants import to_int8
from tests.conftest import IMAGES
from tests.server import DEFAULT


def test_a_lever_reaches_quantize_static_and_the_recipe_names_it(tmp_path) -> None:
    out = tmp_path / "q.onnx"
    recipe = to_int8(DEFAULT / "model.onnx", out, [images((8, 112, 112), seed=1)], quant_format=QuantFormat.QOperator)
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "QLinearConv" in ops and "Conv" not in ops, "QOperator: the convolutions are quantised operators"
    assert recipe["levers"] == {"quant_format": str(QuantFormat.QOperator)}


@pytest.mark.slow
def test_every_lever_is_timed_beside_fp32_and_checked_for_agreement(tmp_path, monkeypatch) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in sorted(IMAGES.iterdir())[:2]:
        shutil.copy(path, photos / path.name)
    monkeypatch.setattr(int8_levers, "GENERATED", 64)
    found = int8_levers.study(DEFAULT, photos, rounds=1)
    rows = found["rows"]
    assert list(rows) == ["fp32", *int8_levers.LEVERS, int8_levers.OPENVINO]
    assert rows["fp32"]["× fp32 wall, batch 1"] == 1.0 and rows["fp32"]["top-1 photos"] == 1.0
    assert found["photos"] == 6, "each photo as it is, mirrored and in greyscale"
    for name, row in rows.items():
        assert row["wall ms, batch 8"] > 0 and row["× fp32 CPU, batch 8"] > 0, name
        assert 0 <= row["top-1 generated"] <= 1 and 0 <= row["top-1 photos"] <= 1, name
    # the trained default model keeps its answers under the adopted recipe (its export's ≥ 99 % rule, on shapes)
    assert rows["weight zero point 0 (the VNNI recipe)"]["top-1 generated"] >= 0.95
    text = int8_levers.table(DEFAULT, found)
    assert ", ".join(cpu_isa()) in text.splitlines()[0] and "| U8U8 (uint8 weights) |" in text
