"""The mission's workload in `make bench`: a ResNet-50 exported as users export it, served as `make serve` serves
it, beside the same file without the out-of-distribution score and beside the naive BentoML service.

    python -m loadtest.workload [--seconds S] [--rounds R]   (after export.bench has made reports/bench/models)

The score's statistics come from crops and variants of real photos, tiled to 16 Gaussians: the most an export
fits (one per frequent predicted class), which a trained model with varied reference images reaches while an
untrained one predicts one to three classes. The three servers run at once, each idle while another is driven,
and are driven in turn in rounds (the order rotating), so that each ratio is paired within a round on these
noisy machines; the figures are medians over the rounds.
"""

import argparse
import json
import shutil
import statistics
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np

import contract

from .drive import PHOTOS, load, photos
from .server import ROOT, child, model_home, serve
from .targets import Target

GAUSSIANS = 16
VARIANTS = 40  # of each photo: 240 reference images from the six
PROJECT, PLAIN, NAIVE = "project", "project, no score", "naive"
SERVERS = (PROJECT, PLAIN, NAIVE)
CLIENTS = (1, 8)


def tile(folder: Path, groups: int = GAUSSIANS) -> None:
    """The export's Gaussians repeated to ``groups``: the score's cost at its largest, its answers unchanged."""
    meta = contract.read(folder)
    record = meta.reference
    with np.load(folder / record.file) as npz:
        arrays = {k: npz[k] for k in npz.files}
    n = len(arrays["means"])
    arrays = {k: np.concatenate([v] * -(-groups // n))[:groups] for k, v in arrays.items()}
    np.savez(folder / record.file, **arrays)
    contract.write(folder, meta.model_copy(update={"reference": record.model_copy(update={"components": groups})}))


def with_statistics(source: Path) -> Path:
    """A copy of ``source`` with reference statistics from photo variants, tiled to the worst case."""
    folder = source.with_name(f"{source.name}-reference")
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(source, folder)
    child("export.reference", str(folder), "--images", str(PHOTOS), "--variants", str(VARIANTS), "-n", "1000")
    tile(folder)
    return folder


def _servers(stack: ExitStack, out: Path, plain: Path, scored: Path) -> dict[str, str]:
    env = {"RESNET_MODELS": f"{contract.read(plain).name}:latest"}  # `make serve`'s defaults otherwise
    project = {**env, "BENTOML_HOME": str(model_home(out / "workload-home", scored))}
    no_score = {**env, "BENTOML_HOME": str(model_home(out / "workload-home-plain", plain))}
    target = "service.service:Classifier"
    return {
        PROJECT: stack.enter_context(serve(target, project, out / "workload-project.log")),
        PLAIN: stack.enter_context(serve(target, no_score, out / "workload-plain.log")),
        NAIVE: stack.enter_context(
            serve("loadtest.naive_service:Naive", {"NAIVE_MODEL": str(plain)}, out / "workload-naive.log")
        ),
    }


def measure(out: Path, plain: Path, seconds: float, rounds: int) -> dict:
    """Each server at 1 and 8 clients in every round; the rows' medians and the paired ratios' medians."""
    scored, images = with_statistics(plain), photos()
    points: dict[tuple[str, int], list[dict]] = {(s, c): [] for s in SERVERS for c in CLIENTS}
    with ExitStack() as stack:
        urls = _servers(stack, out, plain, scored)
        runtime = httpx.get(f"{urls[PROJECT]}/models", timeout=10).json()[0]["provider"]
        for r in range(rounds):
            for c in CLIENTS:
                for server in SERVERS[r % len(SERVERS) :] + SERVERS[: r % len(SERVERS)]:
                    fields = {} if server == NAIVE else {"policy": "crop"}
                    points[(server, c)].append(load(urls[server], "classify", images, c, seconds, **fields))
    return {
        "rows": [_row(s, c, points[(s, c)]) for s in SERVERS for c in CLIENTS],
        "ratios": {
            f"{a} / {b}, {c}": _ratio(points, a, b, c) for a, b in ((PROJECT, NAIVE), (PROJECT, PLAIN)) for c in CLIENTS
        },
        "gaussians": contract.read(scored).reference.components,
        "runtime": runtime,
        "rounds": rounds,
        "seconds": seconds,
    }


def _row(server: str, clients: int, points: list[dict]) -> dict:
    def median(key: str) -> float:
        return statistics.median(p[key] for p in points)

    errors = sum(p["errors"] for p in points)
    return {
        "server": server,
        "clients": clients,
        "images_per_s": median("images_per_s"),
        "p50_ms": median("p50_ms"),
        "errors": errors,
    }


def _ratio(points: dict, a: str, b: str, clients: int) -> float:
    """The median over rounds of a's images/s over b's in the same round."""
    pairs = zip(points[(a, clients)], points[(b, clients)], strict=True)
    return statistics.median(x["images_per_s"] / y["images_per_s"] for x, y in pairs)


def targets(w: dict) -> list[Target]:
    r, g = w["ratios"], w["gaussians"]
    return [
        (
            "ResNet-50 served `crop` ≥ 1.0× the naive service, 1 client (paired rounds)",
            r[f"{PROJECT} / {NAIVE}, 1"],
            1.0,
        ),
        (
            "ResNet-50 served `crop` ≥ 1.1× the naive service, 8 clients (paired rounds)",
            r[f"{PROJECT} / {NAIVE}, 8"],
            1.1,
        ),
        (f"ResNet-50 with the OOD score ({g} Gaussians) ≥ 0.95× without, 1 client", r[f"{PROJECT} / {PLAIN}, 1"], 0.95),
        (
            f"ResNet-50 with the OOD score ({g} Gaussians) ≥ 0.95× without, 8 clients",
            r[f"{PROJECT} / {PLAIN}, 8"],
            0.95,
        ),
    ]


def section(w: dict) -> str:
    """The part of BENCHMARKS.md: the rows, then the paired ratios."""
    rows = "\n".join(
        f"| {r['server']} | {r['clients']} | {r['images_per_s']:.1f} | {r['p50_ms']:.1f} | {r['errors']} |"
        for r in w["rows"]
    )
    ratios = "; ".join(f"{k}: {v:.2f}×" for k, v in w["ratios"].items())
    return f"""## The mission's workload: ResNet-50 as users export and serve it (`loadtest/workload.py`)

ResNet-50 fp32 (random weights) exported by the CLI, its out-of-distribution score fitted on {VARIANTS * 6} crops and
variants of the photos and tiled to {w["gaussians"]} Gaussians (the most an export fits); served with `make serve`'s
defaults (runtime: {w["runtime"]}), `crop`, beside the same file without the score and beside
`loadtest/naive_service.py` (one BentoML API, Pillow, onnxruntime's defaults). The three run at once and are driven
in turn, {w["rounds"]} rounds of {w["seconds"]:g} s per point, real JPEG photos 200–1000 px; medians over the rounds.

| server | clients | images/s | p50 ms | errors |
|---|---:|---:|---:|---:|
{rows}

Paired ratios of images/s (median over rounds): {ratios}.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "reports" / "bench" / "models" / "resnet50")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    out = args.model.parents[1]
    result = measure(out, args.model, args.seconds, args.rounds)
    (out / "workload.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
