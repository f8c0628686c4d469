"""OpenVINO beside onnxruntime on CPU: measured at export, chosen from that record alone, answering as onnxruntime
does within the precision it runs."""

import shutil
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import openvino as ov
import pytest

from contract import cpu_isa
from contract.metadata import OPENVINO, Runtime
from contract.threads import usable_cpus
from export.parity import images
from export.runtimes import record
from service import catalog
from service.engine import runtimes
from service.engine.interface import OUTPUTS
from service.engine.runtimes import OpenVinoModel, choose
from service.engine.sessions import Sessions
from tests.conftest import ROOT
from tests.server import DEFAULT, import_models, serve

BF16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def runtime(
    name: str, speedup: float, top1: float = 1.0, isa: tuple[str, ...] = ("avx512f", "amx_bf16"), spread=None
) -> Runtime:
    return Runtime(
        name=name,
        version="2026.4.0",
        cpu="a CPU, 2 cores",
        isa=list(isa),
        threads=2,
        size=112,
        batches=[1, 8],
        ms_per_image=[1.0, 1.0],
        onnxruntime_ms_per_image=[speedup, speedup],
        max_rel=0.01,
        top1=top1,
        spread=spread,
    )


def meta_with(*records: Runtime):
    return catalog.read("m", DEFAULT).meta.model_copy(update={"runtimes": list(records)})


AMX = ["avx512f", "amx_bf16"]


def test_auto_takes_the_fastest_runtime_of_the_record_made_on_a_cpu_like_this_one():
    bf16, f32 = runtime("openvino-bf16", 2.3), runtime("openvino-f32", 1.15)
    assert choose(meta_with(bf16, f32), "auto", AMX)[0] == "openvino-bf16"
    assert choose(meta_with(runtime("openvino-bf16", 2.3, top1=0.98), f32), "auto", AMX)[0] == "openvino-f32"
    assert choose(meta_with(runtime("openvino-f32", 0.9)), "auto", AMX)[0] == "onnxruntime", "never a slower one"


def test_a_tie_stays_on_onnxruntime():
    """Within the fixed margin, or within the record's own run-to-run spread, a runtime is not faster."""
    for tie in (runtime("openvino-f32", 1.0), runtime("openvino-f32", 1.08), runtime("openvino-bf16", 1.3, spread=0.4)):
        chosen, why = choose(meta_with(tie), "auto", AMX)
        assert chosen == "onnxruntime" and "beyond noise" in why, why
    assert choose(meta_with(runtime("openvino-bf16", 1.5, spread=0.4)), "auto", AMX)[0] == "openvino-bf16"
    assert choose(meta_with(runtime("openvino-f32", 1.12)), "auto", AMX)[0] == "openvino-f32", "an old record"


def test_auto_never_guesses_without_a_record_for_this_kind_of_cpu():
    runtime_, why = choose(meta_with(), "auto", AMX)
    assert runtime_ == "onnxruntime" and "no runtime record" in why
    runtime_, why = choose(meta_with(runtime("openvino-bf16", 3.0)), "auto", ["avx512f", "avx512_bf16"])
    assert runtime_ == "onnxruntime" and "record is from a CPU with" in why


def test_a_runtime_set_by_hand_is_taken_and_a_misspelt_one_refused():
    assert choose(meta_with(), "openvino-f32", AMX) == ("openvino-f32", "RESNET_RUNTIME")
    assert choose(meta_with(runtime("openvino-bf16", 3.0)), "onnxruntime", AMX)[0] == "onnxruntime"
    with pytest.raises(RuntimeError, match="RESNET_RUNTIME='openvino'"):
        choose(meta_with(), "openvino", AMX)


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """The default model, with a runtime record measured here (real photos for the agreement)."""
    folder = tmp_path_factory.mktemp("runtimes") / "shapes-resnet10"
    shutil.copytree(DEFAULT, folder)
    record(folder, ROOT.parent / "shared" / "images")
    return folder


@pytest.mark.slow
def test_the_export_records_what_this_cpu_runs_and_auto_reads_it(measured):
    meta = catalog.read("m", measured).meta
    assert [r.name for r in meta.runtimes] == (["openvino-bf16", "openvino-f32"] if BF16 else ["openvino-f32"])
    for r in meta.runtimes:
        assert r.isa == cpu_isa() and r.photos >= 18 and r.top1_photos is not None
        assert len(r.ms_per_image) == len(r.onnxruntime_ms_per_image) == 2 and min(r.ms_per_image) > 0
        assert r.spread is not None and r.spread >= 0 and r.threads == usable_cpus()  # the serving plan's threads
    f32 = next(r for r in meta.runtimes if r.name == "openvino-f32")
    assert f32.max_rel < 1e-3 and f32.top1 == 1.0, "f32: onnxruntime's answers to rounding"
    chosen, why = choose(meta, "auto")
    fit = [r for r in meta.runtimes if r.top1 >= runtimes.MIN_TOP1 and r.speedup() > 1 + runtimes.margin(r)]
    assert chosen == (max(fit, key=Runtime.speedup).name if fit else "onnxruntime"), why


@pytest.mark.parametrize("name", [n for n in OPENVINO if BF16 or n != "openvino-bf16"])
def test_openvino_answers_as_onnxruntime_does_at_its_precision(name):
    entry = catalog.read("m", DEFAULT)
    sessions = Sessions(entry, ("CPUExecutionProvider",), 1, False)
    model = OpenVinoModel(sessions, name, 1)
    assert model.provider == f"OpenVINO CPU ({name})"
    assert model.warmup() == len(entry.meta.preprocessing.buckets())
    for i, shape in enumerate([(1, 112, 112), (4, 112, 176), (2, 150, 112)]):
        x = images(shape, seed=i)
        want, got = sessions.run(x, list(OUTPUTS)), model.run(x, list(OUTPUTS))
        assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in want.items()}
        assert (got["logits"].argmax(1) == want["logits"].argmax(1)).all()
        scale = np.abs(want["logits"]).max()
        limit = 1e-4 if name == "openvino-f32" else 5e-2
        assert np.abs(got["logits"] - want["logits"]).max() / scale < limit


@pytest.mark.slow
def test_served_on_the_runtime_auto_chose_from_the_record(measured, tmp_path):
    """End to end: the engine loads the record's choice, says so in /models, and classifies a photo alike."""
    chosen, _ = choose(catalog.read("m", measured).meta, "auto")
    import_models(tmp_path, measured)
    photo = {"image": ("astronaut.png", (ROOT.parent / "shared" / "images" / "astronaut.png").read_bytes())}
    answers = {}
    for setting in ("auto", "onnxruntime"):
        with serve(tmp_path, tmp_path / f"{setting}.log", RESNET_RUNTIME=setting) as url:
            listing = httpx.get(f"{url}/models").json()[0]
            want = "CPUExecutionProvider" if setting == "onnxruntime" or chosen == "onnxruntime" else chosen
            assert want in listing["provider"] and len(listing["runtimes"]) >= 1
            answers[setting] = httpx.post(f"{url}/classify", files=photo, timeout=30).json()["predictions"][0]
    assert answers["auto"]["label"] == answers["onnxruntime"]["label"]
    assert abs(answers["auto"]["probability"] - answers["onnxruntime"]["probability"]) < 0.02


def test_two_engine_threads_share_an_openvino_model_safely():
    """RESNET_BATCHES_IN_FLIGHT=2: two calls at once, each on its own infer request, each its own answer."""
    model = OpenVinoModel(Sessions(catalog.read("m", DEFAULT), ("CPUExecutionProvider",), 1, False), "openvino-f32", 1)
    inputs = [images((2, 112, 112 + 32 * (i % 3)), seed=i) for i in range(8)]
    alone = [model.run(x, ["logits"])["logits"] for x in inputs]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda x: model.run(x, ["logits"])["logits"], inputs))
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_array_equal(a, b)
