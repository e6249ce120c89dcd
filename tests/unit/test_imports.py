"""The package's import graph: no cycles, the vocabulary a leaf, the report apart from export."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "sweeper"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    """Every import of the package (module level and inside functions) between its modules."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py") if "python_backend" not in p.parts}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sweeper"):
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("sweeper")]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for target in sorted(graph[node]):
            if target.startswith(node + "."):  # a package importing its own parts is no cycle
                continue
            if state.get(target) == 1:
                return path + [target]
            if target not in state:
                found = visit(target, path + [target])
                if found:
                    return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def test_no_import_cycle():
    assert _cycle(_graph()) is None


def test_the_vocabulary_is_a_leaf_every_stage_shares():
    graph = _graph()
    assert graph["sweeper.vocabulary"] == set()
    for stage in ("sweeper.spec", "sweeper.triton_config", "sweeper.study", "sweeper.results", "sweeper.export"):
        assert "sweeper.vocabulary" in graph[stage], stage


def test_export_does_not_depend_on_the_report():
    graph = _graph()
    assert not any(target.startswith("sweeper.report") for target in graph["sweeper.export"])
