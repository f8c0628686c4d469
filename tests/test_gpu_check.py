"""The GPU check's CPU-testable parts: I/O-bound calls (the CUDA-graph lever's harness) give run()'s answer; the
served points' engine figures and their report."""

import json

import numpy as np

from export.gpu_check import bound_runner
from export.parity import images
from export.session import session
from loadtest.gpu_check import engine_figures, paired_ratios
from loadtest.gpu_report import gpu_section, paired_part
from tests.conftest import ROOT
from tests.server import DEFAULT


def test_bound_runner_matches_a_plain_run() -> None:
    sess, x = session(DEFAULT / "model.onnx"), images((3, 112, 176))
    call = bound_runner(sess, x, 6, 128, stride=16, device="cpu")
    np.testing.assert_allclose(call(), sess.run(["logits"], {"pixels": x})[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(call(), call())  # the same buffers, called again


def test_engine_figures_say_where_a_served_points_time_went() -> None:
    before = {"images": 100.0, "model_calls": 10.0, "model_seconds": 1.0, "front_calls": 50.0}
    after = {"images": 400.0, "model_calls": 30.0, "model_seconds": 2.5, "front_calls": 150.0}
    figures = engine_figures(before, after, seconds=3.0, requests=300)
    assert figures == {"engine_batch": 15.0, "model_busy": 0.5, "images_per_front_call": 3.0}


def test_the_gpu_report_shows_every_variant_served() -> None:
    """BENCHMARKS.md's GPU part, from the committed run: each variant's table under its title, with the engine's
    figures as columns."""
    g = json.loads((ROOT / "docs" / "gpu_check.json").read_text())
    text = gpu_section(ROOT / "docs" / "gpu_check.json")
    assert g["variants"] and all(f"Served with {title}:" in text for title in g["variants"].values())
    assert "| images / model call |" in text and "fp16 served at 128 clients" in text


def test_paired_ratios_pair_each_round_and_take_the_median() -> None:
    rates = {(0, "default"): 100.0, (0, "variant"): 110.0, (1, "variant"): 90.0, (1, "default"): 100.0}
    rates |= {(2, "default"): 50.0, (2, "variant"): 60.0}
    rows = [{"round": r, "concurrency": 32, "side": side, "images_per_s": v} for (r, side), v in rates.items()]
    rows.append({"round": 0, "concurrency": 128, "side": "default", "images_per_s": 200.0})
    assert paired_ratios(rows) == {32: 1.1}  # 1.1, 0.9, 1.2; 128 has no pair
    g = {"paired": rows, "paired_ratios": {"32": 1.1}, "paired_title": "`RESNET_ENGINES=2`"}  # as gpu.json keeps it
    assert "`RESNET_ENGINES=2` beside the default configuration" in paired_part(g) and "| 32 | 1.10 |" in paired_part(g)
