"""The package's shape: no function over 45 lines and no module over 600, and its import graph, every edge counted (imports inside functions and under
TYPE_CHECKING included, a package's ``__init__`` importing its own parts too): no cycles, the
vocabulary a leaf, and the readers of a finished study (results, report, export, fleet) apart from the
machinery that measures (study, launchers, load)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

MEASURING = ("sweeper.study", "sweeper.launchers", "sweeper.load", "sweeper.sweep")
READERS = ("sweeper.results", "sweeper.front", "sweeper.report", "sweeper.export", "sweeper.record", "sweeper.fleet")


def _module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """Every import between the modules of ``root``/sweeper, wherever it is written."""
    modules = {_module_name(root, p): p for p in (root / "sweeper").rglob("*.py") if "python_backend" not in p.parts}
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


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it, or None."""
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
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


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for target in graph[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_no_import_cycle():
    assert find_cycle(import_graph(REPO)) is None


def test_the_check_sees_a_cycle_through_a_package_and_a_type_checking_import(tmp_path):
    """The shape the tree had before this check: spec -> launchers (package) -> launchers._base
    -> spec (under TYPE_CHECKING). An earlier check skipped package-to-part edges and missed it."""
    for name, body in {
        "sweeper/spec.py": "from sweeper.launchers import LAUNCHERS\n",
        "sweeper/launchers/__init__.py": "from sweeper.launchers._base import Launcher\n",
        "sweeper/launchers/_base.py": "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
        "    from sweeper.spec import ServerSpec\n",
    }.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body)
    assert find_cycle(import_graph(tmp_path)) == [
        "sweeper.launchers",
        "sweeper.launchers._base",
        "sweeper.spec",
        "sweeper.launchers",
    ]


def test_the_vocabulary_is_a_leaf_every_stage_shares():
    graph = import_graph(REPO)
    assert graph["sweeper.vocabulary"] == set()
    for stage in (
        "sweeper.spec._schema",
        "sweeper.triton_config",
        "sweeper.study",
        "sweeper.results",
        "sweeper.record",
    ):
        assert "sweeper.vocabulary" in graph[stage], stage


@pytest.mark.parametrize("reader", READERS)
def test_readers_of_a_study_import_no_measuring_machinery(reader):
    graph = import_graph(REPO)
    modules = [m for m in graph if m == reader or m.startswith(reader + ".")]
    for module in modules:
        pulled = {t for t in reachable(graph, module) if t.startswith(MEASURING)}
        assert not pulled, f"{module} imports {sorted(pulled)}"


def test_the_report_only_reads_and_draws():
    """Drawing a finished study measures nothing: no ONNX Runtime, no artifacts, even lazily."""
    sources = list((REPO / "sweeper" / "report").glob("*.py"))
    assert sources
    for source in sources:
        text = source.read_text()
        assert "onnxruntime" not in text and "sweeper.artifacts" not in text, source.name
    graph = import_graph(REPO)
    for module in [m for m in graph if m.startswith("sweeper.report")]:
        assert "sweeper.artifacts" not in reachable(graph, module), module


def test_spec_does_not_import_the_launchers():
    graph = import_graph(REPO)
    for module in [m for m in graph if m.startswith("sweeper.spec")]:
        assert not any(t.startswith("sweeper.launchers") for t in reachable(graph, module)), module


def test_export_does_not_depend_on_the_report():
    assert not any(target.startswith("sweeper.report") for target in reachable(import_graph(REPO), "sweeper.export"))


def test_no_module_is_over_600_lines():
    long = [
        f"{path.relative_to(REPO)}: {lines}"
        for path in (REPO / "sweeper").rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > 600
    ]
    assert not long, long


def test_no_function_is_over_45_lines():
    long = []
    for path in (REPO / "sweeper").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 45:
                long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}")
    assert not long, long


def test_only_the_record_names_optunas_attributes():
    """record.py is the one place that knows which attribute holds what; every other module
    reads typed records (``read_study``, ``marks``, ``study_fact``) and writes through it."""
    naming = [
        str(path.relative_to(REPO))
        for path in (REPO / "sweeper").rglob("*.py")
        if path.name != "record.py"
        and any(w in path.read_text() for w in ("user_attrs", "set_user_attr", "system_attrs"))
    ]
    assert not naming, naming
