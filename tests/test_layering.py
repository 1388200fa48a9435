"""The subpackages form layers: no two of them import each other (function-local imports included)."""

import ast
from pathlib import Path

import fusionnet_keras

PACKAGE = Path(fusionnet_keras.__file__).parent


def _subpackage_imports() -> dict:
    """``{subpackage: {subpackages it imports}}`` over every module, imports inside functions included."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).parts
        if len(parts) < 2:  # the package's own __init__, __main__
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                target = name.split(".")
                if target[0] == "fusionnet_keras" and len(target) > 1 and target[1] != parts[0]:
                    graph.setdefault(parts[0], set()).add(target[1])
    return graph


def test_no_two_subpackages_import_each_other():
    graph = _subpackage_imports()
    assert {"workflows", "blockwise", "inference", "pretrained"} <= set(graph)  # the walk saw the package
    circles = sorted({tuple(sorted((a, b))) for a, deps in graph.items() for b in deps if a in graph.get(b, ())})
    assert circles == []


def test_the_layers_named_in_issue_25_point_one_way():
    graph = _subpackage_imports()
    for upper, lower in (("workflows", "blockwise"), ("training", "models"), ("pretrained", "inference")):
        assert lower in graph[upper] and upper not in graph.get(lower, ())
