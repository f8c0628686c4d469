#!/usr/bin/env bash
# A dress rehearsal, on a CPU machine as root, of the device calls that deploy/gpu/carry.py printed
# (.carry/calls.json): each call gets a copy of the working tree and its carried paths, as the device's
# checkout does, and runs in a namespace with no network, a /tmp of its own that lasts from call to call
# (the warm machine's), the system's wrk and LuaJIT hidden, no pip configuration, and on PATH first a
# Python 3.12 environment standing in for the image (torch 2.11, onnxruntime 1.30 CPU, numpy, onnx, …).
#
#   bash deploy/gpu/rehearse.sh IMAGE_VENV [arguments added to the last call: --allow-cpu --seconds 2 --batches 1,8]
#
# SIM (default /var/tmp/gpukit-device) holds the simulated checkout, /tmp and $OUT of each call.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
IMAGE=$(cd "$1" && pwd)
shift
SIM=${SIM:-/var/tmp/gpukit-device}
[ -x "$IMAGE/bin/python3" ] || { echo "$IMAGE/bin/python3: no such interpreter"; exit 2; }
rm -rf "$SIM" && mkdir -p "$SIM/repo" "$SIM/tmp"
chmod 1777 "$SIM/tmp"
n=$(python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))))' "$ROOT/.carry/calls.json")
for ((i = 0; i < n; i++)); do
  call=$(python3 -c 'import json, sys; c = json.load(open(sys.argv[1]))[int(sys.argv[2])]
print(c["command"]); print(" ".join(c["carry"]))' "$ROOT/.carry/calls.json" "$i")
  command=$(sed -n 1p <<<"$call")
  carry=$(sed -n 2p <<<"$call")
  [ $((i + 1)) = "$n" ] && [ $# -gt 0 ] && command="$command $*"
  # the checkout: tracked and untracked-not-ignored files, then this call's carried paths only
  rm -rf "$SIM/repo/.carry"
  (cd "$ROOT" && git ls-files -co --exclude-standard -z | python3 -c 'import os, sys
sys.stdout.buffer.write(b"".join(p + b"\0" for p in sys.stdin.buffer.read().split(b"\0") if p and os.path.lexists(p)))' |
    tar --null -T - -cf - $carry) | tar -xf - -C "$SIM/repo"
  out="$SIM/out$((i + 1))"
  mkdir -p "$out"
  echo "=== call $((i + 1))/$n: carry [$carry]: $command"
  start=$SECONDS
  set +e
  env -i HOME=/root TERM=dumb OUT="$out" PIP_CONFIG_FILE=/dev/null \
    PATH="$IMAGE/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    unshare --net --mount --propagation private bash -c '
      set -e; ip link set lo up; mount --bind "$1/tmp" /tmp
      mount --bind /dev/null /usr/bin/wrk
      for l in /lib/x86_64-linux-gnu/libluajit-5.1.so.2*; do [ -f "$l" ] && mount --bind /dev/null "$l"; done
      cd "$1/repo"; set +e; timeout 600 bash -c "$2"' _ "$SIM" "$command"
  rc=$?
  set -e
  echo "=== call $((i + 1)) exited $rc after $((SECONDS - start)) s; \$OUT holds: $(cd "$out" && find . -type f | tr '\n' ' ')"
  [ "$rc" = 0 ] || exit "$rc"
done
