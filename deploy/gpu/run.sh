#!/usr/bin/env bash
# The last device call on the lent GPU host (see deploy/gpu/carry.py): put together the payload parts that the
# earlier calls left in /tmp/gpukit, install its wheels into /tmp/site (onnxruntime-gpu shadowing the image's
# CPU onnxruntime), check that a CUDA session loads, then run `python3 -m loadtest.gpu_check`. What comes back
# ($OUT/gpu): gpu.json, inprocess.json, decode.json, run.log and server-logs.tar.gz.
#
#   bash deploy/gpu/run.sh [--allow-cpu] [more loadtest.gpu_check arguments: --seconds 2 --batches 1,8]
#
# Environment: OUT (set by the device tool; default $GPUKIT_WORK/returned), GPUKIT_WORK (/tmp/gpukit),
# GPUKIT_SITE (/tmp/site), GPUKIT_DEADLINE (seconds the whole script may take, 570; the call's limit is 600),
# PYTHON (python3). Run again while the machine is warm, it skips the install and gpu_check's export.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
KIT=$ROOT/.carry/kit
WORK=${GPUKIT_WORK:-/tmp/gpukit}
SITE=${GPUKIT_SITE:-/tmp/site}
OUT=${OUT:-$WORK/returned}
PY=${PYTHON:-python3}
DEADLINE=${GPUKIT_DEADLINE:-570}
RESULTS=$WORK/gpu
export GPUKIT_RUN_ID="$$-$RANDOM"  # inherited by everything started below: how the leftovers are found
ALLOW_CPU=0
for a in "$@"; do [ "$a" = --allow-cpu ] && ALLOW_CPU=1; done
mkdir -p "$WORK" "$RESULTS" "$OUT/gpu"
cd "$ROOT" || exit 2
log() { echo "[run.sh ${SECONDS}s] $*"; }

leftovers() {  # servers gpu_check started in their own sessions, if it was cut short: ours only, by pid
  local pid
  for env in /proc/[0-9]*/environ; do
    pid=${env#/proc/}; pid=${pid%/environ}
    [ "$pid" = $$ ] && continue
    grep -qsxzF "GPUKIT_RUN_ID=$GPUKIT_RUN_ID" "$env" && kill "$pid" 2>/dev/null
  done
}

collect() {  # at most 8 files come back, 16 MiB each
  leftovers
  for f in gpu.json inprocess.json decode.json; do [ -f "$RESULTS/$f" ] && cp "$RESULTS/$f" "$OUT/gpu/"; done
  [ -f "$WORK/run.log" ] && tail -c 4000000 "$WORK/run.log" >"$OUT/gpu/run.log"
  if compgen -G "$RESULTS/server*.log" >/dev/null; then
    mkdir -p "$WORK/logs" && rm -f "$WORK"/logs/*
    for f in "$RESULTS"/server*.log; do tail -c 20000000 "$f" >"$WORK/logs/${f##*/}"; done
    tar -czf "$OUT/gpu/server-logs.tar.gz" -C "$WORK/logs" .
  fi
  log "returned: $(cd "$OUT/gpu" && ls -s | tr '\n' ' ')"
}
trap collect EXIT

# 1. The parts: the earlier calls copied theirs to $WORK, this call carries the last one.
cp -f "$ROOT"/.carry/payload.* "$WORK"/ 2>/dev/null
parts=()
while read -r _ name; do
  [ -f "$WORK/$name" ] || { log "$name missing in $WORK: the machine was given back between calls; make every call again from the first"; exit 3; }
  parts+=("$WORK/$name")
done <"$KIT/parts.sha256"
want=$(cut -d' ' -f1 "$KIT/payload.sha256")

# 2. The install, once per payload (the image's own packages stay untouched).
if [ "$(cat "$SITE/.gpukit" 2>/dev/null)" != "$want" ]; then
  (cd "$WORK" && sha256sum -c --quiet "$KIT/parts.sha256") || { log "a part is corrupt"; exit 3; }
  rm -rf "$WORK/wheels" "$SITE"
  mkdir -p "$WORK/wheels"
  log "unpacking ${#parts[@]} parts"
  # the parts, end to end, are one xz stream per wheel, in the order and of the sizes payload.txt gives
  cat "${parts[@]}" | "$PY" -c 'import lzma, os, sys
src = sys.stdin.buffer
for line in open(sys.argv[1]):
    size, name = line.split()
    left, xz = int(size), lzma.LZMADecompressor()
    with open(os.path.join(sys.argv[2], name), "wb") as out:
        while left:
            chunk = src.read(min(left, 1 << 20))
            if not chunk:
                sys.exit(f"the payload ends inside {name}")
            left -= len(chunk)
            out.write(xz.decompress(chunk))
    if not xz.eof:
        sys.exit(f"{name}: truncated xz stream")' "$KIT/payload.txt" "$WORK/wheels" || exit 4
  log "pip install --no-index --target $SITE: $(ls "$WORK"/wheels | wc -l) wheels"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WORK"/wheels/*.whl || exit 4
  rm -rf "$WORK/wheels"
  # onnxruntime.preload_dlls() looks for nvidia/cu13/lib and nvidia/cudnn/lib beside onnxruntime, nvimgcodec for
  # nvidia/cu13/lib/libnvjpeg.so.13 beside itself, i.e. all in $SITE: merge the image's nvidia/ tree into $SITE's
  # with symbolic links (folders where $SITE has none, files in folders it has, as carried nvJPEG's cu13/lib).
  env -u PYTHONPATH "$PY" - "$SITE" <<'EOF' || exit 4
import os, site, sys
linked = []

def merge(theirs: str, mine: str) -> None:
    os.makedirs(mine, exist_ok=True)
    for name in sorted(os.listdir(theirs)):
        src, dst = os.path.join(theirs, name), os.path.join(mine, name)
        if name in ("__init__.py", "__pycache__"):
            continue
        if not os.path.lexists(dst):
            os.symlink(src, dst)
            linked.append(dst)
        elif os.path.isdir(src) and os.path.isdir(dst) and not os.path.islink(dst):
            merge(src, dst)

try:  # every nvidia/ folder the image's python3 sees (torch's CUDA and cuDNN wheels)
    import nvidia
    folders = list(nvidia.__path__)
except ImportError:
    folders = [os.path.join(b, "nvidia") for b in site.getsitepackages()]
for folder in folders:
    if os.path.isdir(folder):
        merge(folder, os.path.join(sys.argv[1], "nvidia"))
print(f"linked {len(linked)} paths of {folders} into {sys.argv[1]}/nvidia, e.g.", *linked[-3:])
EOF
  echo "$want" >"$SITE/.gpukit"
else
  log "$SITE already holds this payload"
fi

# 3. The environment: carried packages first, then the project (not pip-installed: its torch pin is not the host's).
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$KIT/bin:$PATH" LOADTEST_IMAGES="$KIT/photos" PYTHONUNBUFFERED=1 BENTOML_DO_NOT_TRACK=true
command -v nvidia-smi >/dev/null && nvidia-smi || log "no nvidia-smi"
"$PY" -c "import onnxruntime as o; print(o.__version__, o.get_available_providers())"
"$PY" - "$KIT/carried.txt" <<'EOF'
import importlib.metadata as md, sys
from packaging.requirements import Requirement
import bentoml, onnxruntime, torch
for m in (onnxruntime, bentoml, torch):
    print(f"{m.__name__} {m.__version__} from {m.__file__}")
for name in [line.split("==")[0] for line in open(sys.argv[1]).read().split()]:
    for text in md.distribution(name).requires or []:
        req = Requirement(text)
        if req.marker and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            have = md.version(req.name)
        except md.PackageNotFoundError:
            print(f"!!! {name} needs {req}: missing")
            continue
        if not req.specifier.contains(have, prereleases=True):
            print(f"!!! {name} needs {req}: found {have}")
EOF
wrk --version 2>&1 | head -1

# 4. A CUDA session before the long run; if preload_dlls cannot find the libraries, name their folders.
preflight() {
  "$PY" - <<'EOF'
import onnxruntime as ort
ort.preload_dlls()
s = ort.InferenceSession("default_model/shapes-resnet10/model.onnx", providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
print("preflight session providers:", s.get_providers())
raise SystemExit(s.get_providers()[0] != "CUDAExecutionProvider")
EOF
}
if [ "$ALLOW_CPU" = 0 ] && ! preflight; then
  LD_LIBRARY_PATH=$(env -u PYTHONPATH "$PY" -c 'import glob, nvidia; print(":".join(sorted({d for b in nvidia.__path__ for d in glob.glob(b + "/*/lib")})))')${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export LD_LIBRARY_PATH
  log "retrying with LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  preflight || { ldd "$SITE"/onnxruntime/capi/libonnxruntime_providers_cuda.so | grep -i "not found"; exit 5; }
fi

# 5. The check, cut short (SIGINT: the servers are stopped) before the call's limit.
left=$((DEADLINE - SECONDS - 20))
log "python3 -m loadtest.gpu_check --out $RESULTS $* (at most ${left}s)"
timeout -s INT -k 20 "$left" "$PY" -m loadtest.gpu_check --out "$RESULTS" "$@" 2>&1 | tee "$WORK/run.log"
rc=${PIPESTATUS[0]}
log "gpu_check exited with $rc"
exit "$rc"
