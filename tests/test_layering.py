"""The design's dependency direction: service/ never imports torch, models/ stays pure PyTorch, contract/ is plain."""

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

FORBIDDEN = {
    "service": {"torch", "models", "export"},
    "models": {"onnx", "onnxruntime", "bentoml", "service", "export"},
    "export": {"service"},
    "loadtest": {"torch", "models", "export", "service"},
    "contract": {"torch", "models", "export", "service", "loadtest", "onnx", "onnxruntime", "bentoml", "numpy"},
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


def test_checker_catches_a_torch_import(tmp_path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    import torch.nn as nn\n    return nn\n")
    assert "torch" in imported_roots(bad)
