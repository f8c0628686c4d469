# GPU-ready serving image: onnxruntime-gpu with CUDA/cuDNN from PyPI, no torch, non-root.
#   podman build --network host -t resnet-serve .            (behind a TLS proxy: see README)
#   podman run --gpus all -p 3000:3000 -p 8001:8001 resnet-serve
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG PIP_CERT=""
# `serve` alone for a CPU-only image (the container test builds that); `gpu` adds CUDA and cuDNN from PyPI
ARG EXTRAS=serve,gpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 BENTOML_HOME=/opt/bentoml BENTOML_DO_NOT_TRACK=true
WORKDIR /src
COPY pyproject.toml README.md ./
COPY contract contract
COPY models/__init__.py models/
COPY export export
COPY service service
COPY loadtest/__init__.py loadtest/
COPY default_model/shapes-resnet10 default_model/shapes-resnet10
COPY default_model/shapes-resnet10-int8 default_model/shapes-resnet10-int8
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install ${PIP_CERT:+--cert "$PIP_CERT"} ".[${EXTRAS}]" \
 && /opt/venv/bin/python -m export.store default_model/shapes-resnet10 default_model/shapes-resnet10-int8

FROM ${BASE_IMAGE}
ENV PATH=/opt/venv/bin:$PATH BENTOML_HOME=/opt/bentoml BENTOML_DO_NOT_TRACK=true \
    RESNET_MODELS=shapes-resnet10:latest,shapes-resnet10-int8:latest \
    RESNET_PROVIDERS=CUDAExecutionProvider,CPUExecutionProvider
RUN useradd --create-home --uid 1000 app
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=app:app /opt/bentoml /opt/bentoml
COPY --chown=app:app service /app/service
WORKDIR /app
USER app
EXPOSE 3000 8001
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3000/readyz', timeout=4)"]
CMD ["sh", "-c", "python -m service.check && exec bentoml serve service.service:Classifier --host 0.0.0.0 --port 3000"]
