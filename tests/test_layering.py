"""The design's dependency direction: service/ never imports torch, models/ stays pure PyTorch, contract/ is plain
(pydantic, numpy and Pillow); inside service/, each subpackage imports only the layers below it, and only the engine
imports a runtime."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

FORBIDDEN = {
    "service": {"torch", "models", "export"},
    "models": {"onnx", "onnxruntime", "bentoml", "service", "export"},
    "export": {"service"},
    "loadtest": {"torch", "models", "export", "service"},
    "contract": {"torch", "models", "export", "service", "loadtest", "onnx", "onnxruntime", "bentoml"},
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_import_direction(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    bad = {
        f"{f.relative_to(ROOT)} imports {sorted(imported_roots(f) & FORBIDDEN[package])}"
        for f in files
        if imported_roots(f) & FORBIDDEN[package]
    }
    assert not bad, bad


# Inside service/: what each part may import of the others (the wiring modules service, check and bench: any).
LAYERS = {
    "config": set(),
    "errors": set(),
    "catalog": set(),
    "metrics": set(),
    "asgi": {"errors"},
    "rollout": {"errors"},
    "repository": {"errors", "rollout"},
    "protocol": {"errors", "asgi", "rollout"},
    "http": {"errors", "asgi", "protocol", "rollout"},
    "imaging": {"errors", "config"},
    "engine": {"errors", "config", "catalog", "metrics", "asgi", "http", "protocol", "repository", "rollout"},
    "classifier": {"errors", "config", "catalog", "metrics", "imaging", "protocol", "engine", "rollout"},
}
RUNTIME = {"engine", "bench", "check"}
THIRD_PARTY = {"onnxruntime": RUNTIME, "openvino": RUNTIME, "numpy": set(LAYERS) - {"http", "asgi", "config", "errors"}}


def service_modules(path: Path) -> set[str]:
    """The modules (or packages) of service/ that a module imports, dotted below service/, relative imports resolved."""
    package = path.relative_to(ROOT / "service").parts[:-1]  # the module's folders inside service/
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            target = (*base, *node.module.split(".")) if node.module else base
            found |= {".".join(target)} if node.module else set()
            found |= {".".join((*target, a.name)) for a in node.names}  # a module imported by name, or a symbol
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("service."):
            found.add(node.module.removeprefix("service."))
    return found


def service_imports(path: Path) -> set[str]:
    """The parts of service/ (subpackages or top-level modules) that a module imports."""
    return {m.split(".")[0] for m in service_modules(path)} - {part_of(path)}


def part_of(path: Path) -> str:
    return path.relative_to(ROOT / "service").parts[0].removesuffix(".py")


@pytest.mark.parametrize("module", sorted((ROOT / "service").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_service_layers_point_one_way(module: Path) -> None:
    part = part_of(module)
    if part not in LAYERS:
        return  # the wiring: service.py, check.py, bench.py, __init__.py
    assert service_imports(module) <= LAYERS[part], f"{part} may import only {sorted(LAYERS[part])}"
    for package, allowed in THIRD_PARTY.items():
        assert package not in imported_roots(module) or part in allowed, f"{part} imports {package}"


@pytest.mark.parametrize("part", ["engine", "protocol"])
def test_only_the_front_imports_its_guard(part: str) -> None:
    """The Guard is the front's policy: the protocol's own routes and rules live in protocol/paths.py."""
    modules = sorted((ROOT / "service" / part).rglob("*.py"))
    assert not [str(f.relative_to(ROOT)) for f in modules if "http.guard" in service_modules(f)]


@pytest.mark.slow
def test_a_front_with_a_remote_engine_never_imports_a_runtime() -> None:
    runtimes = "('onnxruntime', 'openvino')"
    code = f"import sys, service.service; print(sorted(m for m in sys.modules if m.startswith({runtimes})))"
    env = {**os.environ, "RESNET_ENGINE_URL": "http://127.0.0.1:9"}
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]", run.stdout


def test_config_imports_nothing_of_the_service() -> None:
    assert not service_imports(ROOT / "service" / "config.py")


def test_checker_catches_a_torch_import(tmp_path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    import torch.nn as nn\n    return nn\n")
    assert "torch" in imported_roots(bad)
