#!/usr/bin/env bash
# `make container-test`: build the project's Dockerfile and `bentoml containerize` the Bento with podman,
# run each, wait for /readyz, classify a real image and check the label, stop it.
# Registries are unreachable here, so the base image is a local Debian bookworm (debootstrap) with Python.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
BASE=localhost/resnet-base:bookworm
PORT=${CONTAINER_PORT:-3300}
GRPC_PORT=${CONTAINER_GRPC_PORT:-3301}  # host networking: not 8001, which a `make serve` may hold
export BENTOML_DO_NOT_TRACK=true

command -v podman >/dev/null || { $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap; }
if [ ! -f /etc/containers/containers.conf ] || ! grep -q runc /etc/containers/containers.conf; then
  # crun fails on this host's cgroup layout; runc with modest ulimits works (shared/ENVIRONMENT.md)
  $SUDO mkdir -p /etc/containers
  printf '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n[engine]\nruntime = "runc"\n[engine.runtimes]\nrunc = ["/usr/sbin/runc"]\n' \
    | $SUDO tee /etc/containers/containers.conf >/dev/null
fi
work=$(mktemp -d)
trap 'podman rm -f resnet-ct resnet-ct-bento >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
podman rm -f resnet-ct resnet-ct-bento >/dev/null 2>&1 || true  # left by a run that was killed
if ! podman image exists localhost/debian:bookworm; then
  echo "» debootstrap a Debian bookworm base"
  $SUDO debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian >/dev/null
  $SUDO tar -C "$work/rootfs" -c . | podman import - localhost/debian:bookworm
fi
if ! podman image exists "$BASE"; then
  echo "» $BASE: Python 3.11 and this host's CA bundle (for builds behind the TLS-inspecting proxy)"
  cp deploy/base.Dockerfile "$work/Dockerfile" && cp /etc/ssl/certs/ca-certificates.crt "$work/ca.crt"
  podman build --network host -q -t "$BASE" "$work"
fi

check() {  # NAME: wait for /readyz, then classify a generated star and expect "star"
  for _ in $(seq 120); do
    curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
    podman container exists "$1" || { echo "$1 exited"; exit 1; }
    sleep 1
  done
  answer=$(curl -fsS -F image=@docs/star.png "http://127.0.0.1:$PORT/classify")
  echo "$1: $answer" | cut -c1-200
  echo "$answer" | grep -q '"label":"star"' || { podman logs "$1" | tail -30; exit 1; }
  podman rm -f "$1" >/dev/null
}

echo "» podman build of ./Dockerfile (CPU extras only: EXTRAS=serve)"
start=$SECONDS
podman build --format docker --network host -q -t localhost/resnet-serve:test --build-arg BASE_IMAGE="$BASE" --build-arg EXTRAS=serve .
echo "  built in $((SECONDS - start)) s, $(podman image inspect --format '{{.Size}}' localhost/resnet-serve:test | awk '{printf "%.0f MB", $1/1e6}')"
podman image inspect localhost/resnet-serve:test | grep -q '/readyz' || { echo "HEALTHCHECK on /readyz missing"; exit 1; }
echo "» RESNET_REQUIRE_GPU=1 without a GPU: the image's own command stops at once, with the reason"
if out=$(timeout 120 podman run --rm --network host -e RESNET_REQUIRE_GPU=1 -e RESNET_GRPC_PORT="$GRPC_PORT" \
  localhost/resnet-serve:test 2>&1); then
  echo "started without a GPU"; exit 1
fi
echo "$out" | grep -q "RESNET_REQUIRE_GPU=1 but CUDA is unavailable" || { echo "$out" | tail -20; exit 1; }
podman run -d --name resnet-ct --network host -e RESNET_PROVIDERS=CPUExecutionProvider \
  -e RESNET_GRPC_PORT="$GRPC_PORT" localhost/resnet-serve:test \
  sh -c "python -m service.check && exec bentoml serve service.service:Classifier --host 127.0.0.1 --port $PORT" >/dev/null
check resnet-ct

echo "» bentoml build + containerize --backend podman"
export BENTOML_HOME="$work/bentoml"
"$PY" -m export.store default_model/shapes-resnet10 default_model/shapes-resnet10-int8 >/dev/null
sed "s|^docker:|docker:\n  base_image: $BASE|" bentofile.yaml | grep -v python_version > "$work/bentofile.yaml"
RESNET_MODELS=shapes-resnet10:latest,shapes-resnet10-int8:latest \
  "$PY" -m bentoml build -f "$work/bentofile.yaml" --output tag . | tail -1
start=$SECONDS
"$PY" -m bentoml containerize resnet-classifier:latest --backend podman --opt network=host -t localhost/resnet-bento:test >/dev/null
echo "  containerized in $((SECONDS - start)) s"
podman run -d --name resnet-ct-bento --network host -e RESNET_PROVIDERS=CPUExecutionProvider \
  -e RESNET_GRPC_PORT="$GRPC_PORT" localhost/resnet-bento:test \
  serve --port "$PORT" >/dev/null
check resnet-ct-bento
echo "container-test passed"
