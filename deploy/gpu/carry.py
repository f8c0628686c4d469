"""Build what `make gpu-check` needs on the lent GPU host, which has no network, and print the device calls.

    .venv/bin/python deploy/gpu/carry.py [--python python3.12] [--limit-mib 62] [--keep NAME ...]

The host's image has torch, numpy, onnx and the CUDA 13 / cuDNN 9 wheels, but no bentoml, no onnxruntime-gpu
and no wrk; one call carries at most 64 MiB (the working tree included). So, in ignored folders here:

* ``.carry/payload.NN``: every wheel the host lacks, each through xz, one after another and cut in parts: the
  ``serve``, ``gpu`` and ``gpu-decode`` extras (and nvJPEG for nvimgcodec) resolved by pip for CPython 3.12
  manylinux x86-64, less every distribution the image already has (KINDS.md's list). Wheels are re-zipped
  uncompressed so that xz squeezes them (onnxruntime-gpu's 255 MB wheel travels as about 190 MB); the host
  installs them with ``pip --no-index --target /tmp/site``.
* ``.carry/kit``: Debian's wrk and its LuaJIT with a wrapper on PATH, the photos at longer side 500 px
  (lossless, so ``loadtest.drive.photos`` makes the same JPEGs as from the originals), the parts' sha256.

One part travels per call, to /tmp/gpukit there; the last call carries the last part and the kit and runs
deploy/gpu/run.sh. The machine forgets /tmp when it goes back (30 s idle), so make the calls back to back.
Everything is cached under --cache: a second run costs seconds.
"""

import argparse
import glob
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
CARRY = ROOT / ".carry"
MIB = 2**20
PLATFORMS = [
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
]
TARGET = [
    "--only-binary=:all:",
    "--python-version",
    "3.12",
    "--implementation",
    "cp",
    *(a for p in PLATFORMS for a in ("--platform", p)),
]
DEBS = ["wrk", "libluajit-5.1-2"]
KEEP = ["grpcio", "protobuf"]  # gRPC code generated against them (grpc_health, tritonclient) checks them at import
PHOTO_SIDE = 500
WRAPPER = """#!/bin/sh
# Debian's wrk with its own LuaJIT; found by loadtest/wrk.py through PATH.
here=$(cd "$(dirname "$0")/.." && pwd)
export LD_LIBRARY_PATH="$here/wrk/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$here/wrk/usr/bin/wrk" "$@"
"""


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MIB):
            h.update(chunk)
    return h.hexdigest()


def python312() -> str:
    """An interpreter of the host's minor version, so that pip evaluates markers as the host would."""
    pyenv = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12")), reverse=True)
    for found in [shutil.which("python3.12"), *pyenv]:  # (a pyenv shim may exist and still refuse to run)
        check = [found, "-c", "import sys; assert sys.version_info[:2] == (3, 12)"] if found else None
        if check and subprocess.run(check, capture_output=True).returncode == 0:
            return found
    raise SystemExit("no python3.12 found: pass --python")


def ignore_carry() -> None:
    git_path = subprocess.check_output(["git", "rev-parse", "--git-path", "info/exclude"], cwd=ROOT, text=True)
    exclude = Path(git_path.strip())
    exclude = exclude if exclude.is_absolute() else ROOT / exclude
    exclude.parent.mkdir(parents=True, exist_ok=True)
    lines = exclude.read_text().splitlines() if exclude.exists() else []
    if "/.carry/" not in lines:
        exclude.write_text("".join(f"{line}\n" for line in [*lines, "/.carry/"]))


def tree_bytes() -> int:
    """What every call sends besides its carried paths: tracked and untracked-not-ignored files."""
    out = subprocess.check_output(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT)
    paths = [ROOT / p.decode() for p in out.split(b"\0") if p]
    return sum(p.lstat().st_size for p in paths if p.is_symlink() or p.exists())


def requirements(extras: list[str]) -> list[str]:
    """The extras' requirement strings, self-references (resnet-serve[a,b]) expanded."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    own, out, todo, seen = norm(project["name"]), [], list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for req in project["optional-dependencies"][extra]:
            m = re.match(r"([A-Za-z0-9_.-]+)\[([^]]+)]$", req.strip())
            if m and norm(m[1]) == own:
                todo += [e.strip() for e in m[2].split(",")]
            else:
                out.append(req)
    return out


def resolve(python: str, reqs: list[str], cache: Path) -> list[dict]:
    """pip's resolution for the host (cp312, manylinux x86-64): name, version and wheel file name of each."""
    report = cache / "report.json"
    with tempfile.TemporaryDirectory() as target:
        cmd = [
            python,
            "-m",
            "pip",
            "install",
            "-q",
            "--dry-run",
            "--ignore-installed",
            *TARGET,
            "--target",
            target,
            "--report",
            str(report),
            *reqs,
        ]
        subprocess.run(cmd, check=True)
    rows = []
    for item in json.loads(report.read_text())["install"]:
        url = item["download_info"]["url"]
        rows.append(
            {
                "name": norm(item["metadata"]["name"]),
                "version": item["metadata"]["version"],
                "file": os.path.basename(url.split("#")[0]).replace("%2B", "+"),
            }
        )
    return rows


def image_packages(kinds: Path) -> set[str]:
    line = next(x for x in kinds.read_text().splitlines() if x.startswith("nvidia-h200: their image"))
    return {norm(n) for n in line.split("Packages:", 1)[1].strip().rstrip(".").split(", ")}


def download(python: str, dists: list[dict], cache: Path) -> list[Path]:
    wheels = cache / "wheels"
    missing = [d for d in dists if not (wheels / d["file"]).is_file()]
    if missing:
        cmd = [
            python,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            *TARGET,
            "-d",
            str(wheels),
            *(f"{d['name']}=={d['version']}" for d in missing),
        ]
        subprocess.run(cmd, check=True)
    return [wheels / d["file"] for d in dists]


def stored(wheel: Path, cache: Path) -> Path:
    """The wheel re-zipped without compression (same members, modes and RECORD): xz then compresses it well."""
    out = cache / "stored" / wheel.name
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        with zipfile.ZipFile(wheel) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zout:
            for info in zin.infolist():
                new = zipfile.ZipInfo(info.filename, info.date_time)
                new.external_attr, new.compress_type = info.external_attr, zipfile.ZIP_STORED
                new.file_size = info.file_size
                with zin.open(info) as src, zout.open(new, "w", force_zip64=info.file_size > 2**31) as dst:
                    shutil.copyfileobj(src, dst, MIB)
        tmp.rename(out)
    return out


def compressed(wheel: Path, cache: Path, threads: int) -> Path:
    """The stored wheel through xz -9e, cached per wheel: a changed pin recompresses that wheel alone."""
    out = cache / "xz" / f"{wheel.name}.xz"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        print(f"xz -9e {wheel.name}", file=sys.stderr)
        tmp = out.with_suffix(".tmp")
        with open(stored(wheel, cache), "rb") as src, open(tmp, "wb") as dst:
            subprocess.run(["nice", "xz", "-9e", f"-T{threads}", "-c"], stdin=src, stdout=dst, check=True)
        tmp.rename(out)
    return out


def kit(cache: Path, images: Path, folder: Path) -> None:
    """wrk (Debian's, with LuaJIT, run through a wrapper on PATH) and the photos."""
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "wrk").mkdir(parents=True)
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    if not all(glob.glob(str(debs / f"{name}_*.deb")) for name in DEBS):
        subprocess.run(["apt-get", "download", *DEBS], cwd=debs, check=True)
    for name in DEBS:
        deb = sorted(glob.glob(str(debs / f"{name}_*.deb")))[-1]
        subprocess.run(["dpkg-deb", "-x", deb, str(folder / "wrk")], check=True)
    for doc in ("share", "lib/x86_64-linux-gnu/pkgconfig"):
        shutil.rmtree(folder / "wrk" / "usr" / doc, ignore_errors=True)
    (folder / "bin").mkdir()
    (folder / "bin" / "wrk").write_text(WRAPPER)
    (folder / "bin" / "wrk").chmod(0o755)
    (folder / "photos").mkdir()
    for path in sorted(images.iterdir()):  # as loadtest.drive.photos resizes them, kept lossless
        img = Image.open(path).convert("RGB")
        scale = PHOTO_SIDE / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
        img.save(folder / "photos" / f"{path.stem}.png", optimize=True)


def folder_bytes(folder: Path) -> int:
    return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def split(streams: list[Path], size: int) -> tuple[list[Path], str]:
    """The xz streams one after another, cut into parts of ``size`` bytes (the last shorter); their sha256."""
    for old in CARRY.glob("payload.*"):
        old.unlink()
    whole, parts, left = hashlib.sha256(), [], 0
    out = None
    for stream in streams:
        with open(stream, "rb") as f:
            while chunk := f.read(MIB):
                whole.update(chunk)
                while chunk:
                    if not left:
                        if out:
                            out.close()
                        parts.append(CARRY / f"payload.{len(parts) + 1:02d}")
                        out, left = open(parts[-1], "wb"), size  # noqa: SIM115
                    piece, chunk = chunk[:left], chunk[left:]
                    out.write(piece)
                    left -= len(piece)
    if out:
        out.close()
    return parts, whole.hexdigest()


def calls(parts: list[Path], run_args: str) -> list[dict]:
    """The device `run` calls: one part each to /tmp/gpukit, then the last part, the kit and run.sh."""
    out = []
    for part in parts[:-1]:
        rel = part.relative_to(ROOT)
        cmd = (
            f"set -e; mkdir -p /tmp/gpukit; cp {rel} /tmp/gpukit/; cd /tmp/gpukit; "
            f"echo '{sha256(part)}  {part.name}' | sha256sum -c; ls -l /tmp/gpukit"
        )
        out.append({"command": cmd, "carry": [str(rel)], "timeout_s": 120})
    last = [str(parts[-1].relative_to(ROOT)), ".carry/kit"]
    cmd = f"bash deploy/gpu/run.sh {run_args}".strip()
    out.append({"command": cmd, "carry": last, "timeout_s": 600})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--python", default=None, help="a CPython 3.12 to resolve with (default: python3.12 or pyenv's)")
    p.add_argument("--extras", default="serve,gpu,gpu-decode")
    nvjpeg = "nvidia-nvjpeg~=13.0.0"  # nvimgcodec decodes JPEG with it; the image's CUDA 13.0 wheels lack it
    p.add_argument("--also", nargs="*", default=[nvjpeg], help=f"more requirements (default: {nvjpeg})")
    p.add_argument("--kinds", type=Path, default=Path("/work/.library/device/KINDS.md"), help="the image's packages")
    p.add_argument("--keep", nargs="*", default=KEEP, help=f"carry these although the image has them (default: {KEEP})")
    # the engine imports OpenVINO only for a model it serves on a CPU by its export's record; the GPU check never does
    p.add_argument("--drop", nargs="*", default=["openvino"], help="never carry these (default: openvino)")
    photos = Path(os.environ.get("LOADTEST_IMAGES", ROOT.parent / "shared" / "images"))
    p.add_argument("--images", type=Path, default=photos, help="the photos (default: as loadtest.drive finds them)")
    p.add_argument("--cache", type=Path, default=Path("/tmp/gpukit/cache"))
    p.add_argument("--limit-mib", type=float, default=62.0, help="what one call may send, the working tree included")
    p.add_argument("--threads", type=int, default=2, help="xz threads")
    p.add_argument("--run-args", default="", help="arguments for run.sh in the last call")
    args = p.parse_args()
    python = args.python or python312()
    args.cache.mkdir(parents=True, exist_ok=True)
    ignore_carry()
    CARRY.mkdir(exist_ok=True)

    resolved = resolve(python, [*requirements(args.extras.split(",")), *args.also], args.cache)
    image = image_packages(args.kinds)
    keep, drop = {norm(n) for n in args.keep}, {norm(n) for n in args.drop}
    carried = [d for d in resolved if (d["name"] not in image or d["name"] in keep) and d["name"] not in drop]
    skipped = sorted(f"{d['name']}=={d['version']}" for d in resolved if d not in carried)
    streams = [compressed(w, args.cache, args.threads) for w in download(python, carried, args.cache)]

    kit(args.cache, args.images, CARRY / "kit")
    tree = tree_bytes()
    room = int(args.limit_mib * MIB) - tree  # per call, for carried paths
    extra = folder_bytes(CARRY / "kit") + 64 * 1024  # the kit, its sums file included
    total = sum(s.stat().st_size for s in streams)
    n = math.ceil((total + extra) / room)
    size = math.ceil((total + extra) / n)  # balanced: each call keeps the same headroom for a growing tree
    parts, whole = split(streams, size)
    sums = "".join(f"{sha256(part)}  {part.name}\n" for part in parts)
    (CARRY / "kit" / "parts.sha256").write_text(sums)
    (CARRY / "kit" / "payload.sha256").write_text(f"{whole}  payload\n")
    (CARRY / "kit" / "payload.txt").write_text("".join(f"{s.stat().st_size} {s.name[:-3]}\n" for s in streams))
    (CARRY / "kit" / "carried.txt").write_text("".join(f"{d['name']}=={d['version']}\n" for d in carried))
    plan = calls(parts, args.run_args)
    (CARRY / "calls.json").write_text(json.dumps(plan, indent=2))

    print(f"carried ({len(carried)}): {' '.join(d['name'] + '==' + d['version'] for d in carried)}")
    print(f"left to the image ({len(skipped)}): {' '.join(skipped)}")
    print(f"payload {total / MIB:.1f} MiB in {n} parts; working tree {tree / MIB:.2f} MiB; kit {extra / MIB:.2f} MiB")
    for i, call in enumerate(plan, 1):
        sent = tree + sum(
            folder_bytes(ROOT / c) if (ROOT / c).is_dir() else (ROOT / c).stat().st_size for c in call["carry"]
        )
        assert len(call["command"]) <= 2000
        print(f"\ncall {i}/{len(plan)}  (sends {sent / MIB:.1f} MiB of 64; timeout_s {call['timeout_s']})")
        print(f"  carry:   {json.dumps(call['carry'])}")
        print(f"  command: {call['command']}")
    print(
        "\nMake the calls back to back: the machine forgets /tmp/gpukit after 30 s idle. Each reply's `warm` "
        "must be true from call 2 on; if not, start again at call 1. Also in .carry/calls.json."
    )


if __name__ == "__main__":
    main()
