"""Functions that fit on a screen: none over 60 lines outside the tests."""

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

LONGEST = 60
PACKAGES = ["contract", "models", "export", "service", "loadtest", "deploy"]


def long_functions(path: Path) -> list[str]:
    """``name:line function (N lines)`` for each function in ``path`` longer than LONGEST lines."""
    return [
        f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path)))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > LONGEST
    ]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_function_over_sixty_lines(package: str) -> None:
    found = [line for path in sorted((ROOT / package).rglob("*.py")) for line in long_functions(path)]
    assert not found, found


def test_the_check_finds_a_long_function(tmp_path) -> None:
    code = tmp_path / "code.py"
    code.write_text("def short():\n" + "    x = 1\n" * (LONGEST - 1) + "async def long():\n" + "    x = 1\n" * LONGEST)
    assert long_functions(code) == [f"code.py:{LONGEST + 1} long ({LONGEST + 1} lines)"]
