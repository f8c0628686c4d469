"""`make bench`'s CPU runtime part: onnxruntime and OpenVINO side by side, in process and served.

In process, ``python -m export.runtimes`` times every OpenVINO precision this CPU runs beside onnxruntime
on ResNet-50 fp32 and int8 and on the default model, at batch 1, 8 and 32, and writes each file's
record (what ``RESNET_RUNTIME=auto`` reads). Served, the same files with ``RESNET_RUNTIME=onnxruntime``
and ``auto`` in turn: server CPU per request at 8 clients (ResNet-50 `crop` driven by wrk, the
default model `full` by httpx), from /proc.
"""

import shutil
from pathlib import Path

import httpx

import contract

from . import wrk
from .cpu import cpu_per_request, cpu_seconds, tree
from .server import child, model_home, serve

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("onnxruntime", "auto")  # and, for ResNet-50, OpenVINO bf16 forced where the CPU has bf16


def _served_wrk(url, files: list[Path], seconds: float) -> dict:
    pids = tree(url.pid)
    before = cpu_seconds(pids)
    row = wrk.sweep(url, files, [8], seconds, policy="crop")[0]
    return {**row, "server_cpu_ms": (cpu_seconds(pids) - before) * 1e3 / max(1, row["requests"])}


def measure(out: Path, models: Path, photos_dir: Path, files: list[Path], photos: list[bytes], seconds: float) -> dict:
    default = out / "runtimes-default"
    shutil.rmtree(default, ignore_errors=True)
    shutil.copytree(ROOT / "default_model" / "shapes-resnet10", default / "shapes-resnet10")
    folders = [models / "resnet50", models / "resnet50-int8", default / "shapes-resnet10"]
    child("export.runtimes", *map(str, folders), "--photos", str(photos_dir), "--batches", "1,8,32")
    records = {f.name: [r.model_dump() for r in contract.read(f).runtimes] for f in folders}
    ort = {f.name: records[f.name][0]["onnxruntime_ms_per_image"] if records[f.name] else None for f in folders}
    served: dict[str, dict] = {}
    for name, folder, drive in (("resnet50", folders[0], "wrk"), ("shapes-resnet10", folders[2], "httpx")):
        home = model_home(out / f"runtimes-home-{name}", folder)
        bf16 = name == "resnet50" and any(x["name"] == "openvino-bf16" for x in records[name])
        for setting in (*SETTINGS, "openvino-bf16") if bf16 else SETTINGS:
            env = {
                "BENTOML_HOME": str(home),
                "RESNET_PROVIDERS": "CPUExecutionProvider",
                "RESNET_MODELS": f"{name}:latest",
                "RESNET_RUNTIME": setting,
            }
            with serve("service.service:Classifier", env, out / f"server-runtime-{name}-{setting}.log") as url:
                provider = httpx.get(f"{url}/models").json()[0]["provider"]
                if drive == "wrk":
                    row = _served_wrk(url, files, seconds)
                else:
                    row = cpu_per_request(url, [url.pid], photos, 8, 1500)
            served[f"{name} {setting}"] = {**row, "provider": provider}
    return {"cpu": contract.cpu_name(), "isa": contract.cpu_isa(), "records": records, "ort": ort, "served": served}


def targets(r: dict) -> list[tuple[str, float, float]]:
    s = r["served"]

    def gain(name: str) -> float:
        """onnxruntime's served CPU per request over auto's; 1 where auto kept onnxruntime (the same server: a
        second measurement of it would measure only the machine's noise)."""
        auto, ort = s[f"{name} auto"], s[f"{name} onnxruntime"]
        return 1.0 if auto["provider"] == ort["provider"] else ort["server_cpu_ms"] / auto["server_cpu_ms"]

    default_bf16 = next((x for x in r["records"]["shapes-resnet10"] if x["name"] == "openvino-bf16"), None)
    found = [
        (
            "default model: auto no slower than onnxruntime, served (CPU per request, 5 % noise)",
            gain("shapes-resnet10"),
            0.95,
        )
    ]
    if "amx_bf16" in r["isa"]:
        found.append(
            ("ResNet-50 on auto ≥ 2.5× onnxruntime fp32, served (CPU per request, AMX CPU)", gain("resnet50"), 2.5)
        )
    if default_bf16 is not None:
        found.append(
            (
                "OpenVINO bf16 top-1 agreement ≥ 99 % (default model, parity and generated shapes)",
                default_bf16["top1"],
                0.99,
            )
        )
    return found


def section(r: dict) -> str:
    rows = []
    for name, records in r["records"].items():
        base = r["ort"]["resnet50"] if name.startswith("resnet50") else r["ort"][name]
        if records:
            ort = records[0]
            rows.append((name, "onnxruntime", ort["batches"], ort["onnxruntime_ms_per_image"], base, None, None))
        for x in records:
            rows.append((name, x["name"], x["batches"], x["ms_per_image"], base, x["top1"], x["top1_photos"]))
    lines = [
        "| file | runtime | CPU-ms / image (batch "
        + ", ".join(map(str, rows[0][2]))
        + ") | × onnxruntime fp32 | top-1 vs onnxruntime, shapes | photos |",
        "|---|---|---|---|---:|---:|",
    ]
    for name, runtime, _, ms, base, top1, photos in rows:
        ratio = " / ".join(f"{b / m:.2f}" for b, m in zip(base, ms, strict=True))
        agree = "–" if top1 is None else f"{top1:.1%}"
        on_photos = "–" if photos is None else f"{photos:.0%}"
        lines.append(f"| {name} | {runtime} | {' / '.join(f'{m:.2f}' for m in ms)} | {ratio} | {agree} | {on_photos} |")
    served = ["| model | RESNET_RUNTIME | runs on | server CPU-ms / request | requests/s |", "|---|---|---|---:|---:|"]
    for key, row in r["served"].items():
        model, setting = key.rsplit(" ", 1)
        rps = row.get("requests_per_s", row.get("images_per_s", 0))
        served.append(f"| {model} | {setting} | {row['provider']} | {row['server_cpu_ms']:.2f} | {rps:.0f} |")
    return f"""
## CPU runtimes: onnxruntime and OpenVINO (`RESNET_RUNTIME`)

On {r["cpu"]} (instruction sets of note: {", ".join(r["isa"])}), every core, in process: CPU time
of every thread per image, each call followed by a 3 ms pause as a server's calls are (a runtime
whose idle threads spin pays for it, as it does served; onnxruntime runs as the service runs it,
without spinning). Each file's OpenVINO rows are timed interleaved with onnxruntime on the same file;
"× onnxruntime fp32" divides by onnxruntime on the fp32 file; `auto` weighs batch 1 and 8. Top-1
agreement with onnxruntime on the same file: on the parity shapes and 192 generated shapes, and on
the real photos (as they are, mirrored, greyscale); ResNet-50 is untrained, so its near-tied logits
flip under any rounding: reported, not targeted (and it keeps `auto` off bf16 for that net).

{chr(10).join(lines)}

Served at 8 clients, side by side (ResNet-50 `crop` driven by wrk; the default model `full` by httpx):

{chr(10).join(served)}
"""
