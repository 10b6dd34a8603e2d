"""Layers only import downward: common imports nothing of ours; watcher and projector
import common and never each other (checked on the source, like import-linter)."""

import ast
from pathlib import Path

import pytest

from tests.support.paths import REPO

OURS = {"common", "watcher", "projector", "kube2redis"}
ALLOWED = {
    "common": {"common"},
    "watcher": {"common", "watcher"},
    "projector": {"common", "projector"},
}


def _imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & OURS


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_downward(package: str) -> None:
    for path in (REPO / package).glob("*.py"):
        forbidden = _imported(path) - ALLOWED[package]
        assert not forbidden, f"{path.relative_to(REPO)} imports {sorted(forbidden)}"
