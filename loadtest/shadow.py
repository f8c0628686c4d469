"""A shadow's cost to live traffic in `make bench`: ResNet-50 fp32 served as `make serve` serves it, with its int8
export loaded as a second version of the same name, driven by wrk with and without the int8 version shadowing every
request (``shadow_rate`` 1). The two are alternated in rounds on one server, so that each ratio is paired within a
round; the figures are medians over the rounds.

    python -m loadtest.shadow [--seconds S] [--rounds R]   (after export.bench has made reports/bench/models)
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

import contract

from .drive import PHOTOS
from .server import ROOT, serve
from .targets import Target
from .wrk import run

NAME, CLIENTS = "resnet50", (1, 8)


def stored(home: Path, *folders: Path) -> list[str]:
    """Each folder's version in a fresh model store at ``home``."""
    shutil.rmtree(home, ignore_errors=True)
    cmd = [sys.executable, "-m", "export.store", *map(str, folders)]
    env = {**os.environ, "BENTOML_HOME": str(home)}
    out = subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    return [line.rsplit(":", 1)[1] for line in out.splitlines() if line.startswith("model store:")]


def renamed(source: Path, to: Path) -> Path:
    """``source`` as a version of NAME."""
    shutil.rmtree(to, ignore_errors=True)
    shutil.copytree(source, to)
    contract.write(to, contract.read(to).model_copy(update={"name": NAME}))
    return to


def shadowing(url: str, version: str, on: bool) -> None:
    body = {"parameters": {"version": version, "shadow": on}}
    httpx.post(f"{url}/v2/repository/models/{NAME}/load", json=body, timeout=300).raise_for_status()


def counted(metrics: str, name: str, version: str) -> int:
    found = text_string_to_metric_families(metrics)
    return int(sum(s.value for f in found for s in f.samples if s.name == name and s.labels["version"] == version))


def measure(out: Path, models: Path, seconds: float, rounds: int) -> dict:
    """Live images/s at 1 and 8 clients with the shadow off and on, each round in both orders; the copies the int8
    version answered and those dropped for live work."""
    fp32, int8 = stored(out / "shadow-home", models / NAME, renamed(models / f"{NAME}-int8", out / "shadow-int8"))
    env = {"BENTOML_HOME": str(out / "shadow-home"), "RESNET_MODELS": f"{NAME}:{fp32}"}
    env["RESNET_RUNTIME"] = "onnxruntime"  # both versions on one runtime: the shadow's cost, not a runtime's
    files = sorted(PHOTOS.iterdir())
    rows: dict[str, list[dict]] = {f"{state} c{c}": [] for state in ("off", "on") for c in CLIENTS}
    with serve("service.service:Classifier", env, out / "server-shadow.log") as url:
        shadowing(url, int8, False)  # loaded and warm, no copies yet
        run(url, files, 8, 2, policy="crop")
        for r in range(rounds):
            for state in ("off", "on") if r % 2 == 0 else ("on", "off"):
                shadowing(url, int8, state == "on")
                for c in CLIENTS:
                    rows[f"{state} c{c}"].append(run(url, files, c, seconds, policy="crop"))
        metrics = httpx.get(f"{url}/metrics", timeout=30).text
    median = {k: statistics.median(p["images_per_s"] for p in v) for k, v in rows.items()}
    pairs = {c: zip(rows[f"on c{c}"], rows[f"off c{c}"], strict=True) for c in CLIENTS}
    ratios = {c: statistics.median(on["images_per_s"] / off["images_per_s"] for on, off in pairs[c]) for c in CLIENTS}
    copies = {k: counted(metrics, f"resnet_shadow_{k}_total", int8) for k in ("compared", "dropped")}
    return {"images_per_s": median, "ratio": ratios, **copies, "rounds": rounds}


def targets(found: dict) -> list[Target]:
    return [("live ResNet-50 throughput at 8 clients with a shadow at rate 1 ≥ 0.9× without", found["ratio"][8], 0.9)]


def section(found: dict) -> str:
    rate = found["images_per_s"]
    rows = "\n".join(
        f"| {c} | {rate[f'off c{c}']:.1f} | {rate[f'on c{c}']:.1f} | {found['ratio'][c]:.2f}× |" for c in CLIENTS
    )
    return f"""
## A rollout's shadow: its cost to live traffic

ResNet-50 fp32 as the default, its int8 export as a second version shadowing every request (`shadow_rate` 1),
wrk with and without the shadow in {found["rounds"]} alternating rounds on one server (`python -m loadtest.shadow`);
live images/s, medians, and the median of the paired ratios. Shadow copies run only in time live work leaves idle
(RESNET_SHADOW_MAX_BUSY): {found["compared"]} ran and were compared, {found["dropped"]} were dropped for live work.

| clients | without a shadow | with a shadow | with / without |
|---:|---:|---:|---:|
{rows}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    out = ROOT / "reports" / "bench"
    found = measure(out, out / "models", args.seconds, args.rounds)
    print(json.dumps(found, indent=2), section(found), sep="\n")


if __name__ == "__main__":
    main()
