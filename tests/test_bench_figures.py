"""`make bench`'s arithmetic: ratios paired within a round, and the floor they are taken against."""

import json
import subprocess
import sys

import pytest

import models
from loadtest.overhead import paired
from service import bench
from tests.conftest import IMAGES, ROOT
from tests.server import DEFAULT


def point(clients: int, cpu_ms: float) -> dict:
    return {"concurrency": clients, "processes": 3, "server_cpu_ms": cpu_ms, "p50_ms": cpu_ms * 2}


def test_ratios_to_the_floor_are_paired_within_each_round() -> None:
    floors = [1.0, 2.0, 4.0]  # a machine that slows down between rounds
    cpu = [(1.5, 1.2), (3.2, 2.4), (6.0, 4.8)]  # at 1 and 8 clients, per round
    rounds = {"served": [[point(1, one), point(8, eight)] for one, eight in cpu]}
    (c1, c8) = paired(floors, rounds)["served"]
    assert c1["x_floor"] == pytest.approx(1.5), "median of 1.5, 1.6, 1.5; not median CPU over median floor (1.6)"
    assert c8["x_floor"] == pytest.approx(1.2)
    assert (c1["concurrency"], c8["concurrency"], c1["processes"]) == (1, 8, 3)
    assert (c1["server_cpu_ms"], c1["p50_ms"]) == (3.2, 6.4), "the other figures: medians over the rounds"


def test_the_floor_alone_is_measured_on_real_images(tmp_path) -> None:
    out = tmp_path / "floor.json"
    bench.main(out, DEFAULT, [IMAGES / "chelsea.png", IMAGES / "coffee.png"], [], floor_only=True)
    found = json.loads(out.read_text())
    assert found.keys() == {"model", "images", "cpu_floor_ms"} and found["images"] == 2
    assert min(found["cpu_floor_ms"]["crop"], found["cpu_floor_ms"]["full"]) > 0


WIRE = """
import json, sys
from pathlib import Path
from loadtest import wire
from loadtest.drive import photos
found = wire.measure(Path(sys.argv[1]), photos(sizes=(320,))[0], count=400, rounds=1)
print(json.dumps({"found": found, "targets": wire.targets(found), "section": wire.section(found)}))
"""


@pytest.mark.slow
def test_the_wire_part_measures_the_service_and_the_bare_wires(tmp_path) -> None:
    """In a process of its own: tritonclient.grpc's messages cannot share one with kserve's (tests/grpc_client.py)."""
    run = subprocess.run([sys.executable, "-c", WIRE, str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.splitlines()[-1])
    service, bare = got["found"]["the service"], got["found"]["the wires alone"]
    assert service.keys() == bare.keys() == {"image model, one JPEG", "tensor model, 112×160 pixels"}
    for what, row in service.items():
        for wire in ("HTTP (binary tensors)", "gRPC"):
            assert 0 < bare[what][wire] < row[wire], f"{what} over {wire}: the bare server does no work"
    assert [t[1] for t in got["targets"]] == [r["HTTP (binary tensors)"] / r["gRPC"] for r in service.values()]
    assert "| the wires alone | tensor model, 112×160 pixels |" in got["section"]


def test_the_roof_line_reads_resnet50s_flops_against_the_matrix_product() -> None:
    from export.bench import flops_per_image, sgemm_gflops
    from loadtest.tables import roof_line

    flops = flops_per_image(models.create("resnet18").eval(), 224)
    assert flops == pytest.approx(2 * 1.814e9, rel=0.01), "torchvision's 1.81 GMAC per image, two FLOPs each"
    rows = [
        {"model": "resnet50", "engine": e, "batch": 8, "images_per_s": ips}
        for e, ips in (("onnxruntime fp32", 50.0), ("torch", 25.0))
    ]
    line = roof_line({"resnet50_flops": 8e9, "sgemm_gflops": 500.0, "rows": rows})
    assert "8.0 GFLOP per 224² image" in line and "computes 400 GFLOPS and eager torch 200, against 500" in line
    assert sgemm_gflops(256) > 0
