"""Shared by both tiers: small real models (ONNX graphs, model folders) and specs in tmp dirs.

``tests/unit`` needs no server, Docker, database or browser (``make unit``); ``tests/integration``
runs against the real parts (``make test`` runs both).
"""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import sqlalchemy
from onnx import TensorProto, helper

from sweeper.cli import main
from sweeper.examples import mlp_onnx

REPO = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Markers from what a test uses (pyproject.toml declares them): select by cost or by the
    part a host lacks, e.g. ``pytest -m "not slow"`` or ``-m "not docker"``."""
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)
        fixtures = getattr(item, "fixturenames", ())
        if any("docker" in name for name in fixtures) or "docker" in item.name or "docker" in item.path.name:
            item.add_marker(pytest.mark.docker)
        if any("postgres" in name for name in fixtures):
            item.add_marker(pytest.mark.postgres)


def signal_at_first_commit(storage, signum: int) -> list[bool]:
    """Send this process ``signum`` from inside the storage's next database commit (a real
    signal at a moment no timer can hit); the list returned holds True once it is sent."""
    sent: list[bool] = []

    def on_commit(connection) -> None:
        if not sent:
            sent.append(True)
            os.kill(os.getpid(), signum)

    sqlalchemy.event.listen(storage.engine, "commit", on_commit)
    return sent


def write_spec(folder: Path, body: str, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


@pytest.fixture(scope="session")
def mlp_file(tmp_path_factory) -> Path:
    """The test MLP: x FP32 [batch, 16] -> y FP32 [batch, 4]."""
    return mlp_onnx(tmp_path_factory.mktemp("model") / "mlp.onnx")


def fixed_batch_onnx(path: Path) -> Path:
    """An MLP whose graph declares a dynamic batch axis but reshapes to a batch of one: the axis
    looks open and a batch of more than one fails at run time."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.3, (16, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Reshape", ["m", "shape"], ["y"])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [
            helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel()),
            helper.make_tensor("shape", TensorProto.INT64, [2], [1, 4]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def fixed_axis_onnx(path: Path) -> Path:
    """An MLP as ``torch.onnx.export`` writes it without dynamic axes: x FP32 [1, 16] -> y FP32
    [1, 4], the leading axis a fixed 1."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.3, (16, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "fixed_axis",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def unloadable_onnx(path: Path) -> Path:
    """Valid ONNX that ONNX Runtime cannot load: an operator no runtime implements."""
    node = helper.make_node("NoSuchOperator", ["x"], ["y"], domain="com.example")
    graph = helper.make_graph(
        [node],
        "broken",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    onnx.save(model, str(path))
    return path


def add_sub_onnx(path: Path) -> Path:
    """Triton's ``simple`` model as ONNX: INT32 a, b [batch, 4] -> sum and difference."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Sub", ["a", "b"], ["difference"])],
        "add_sub",
        [helper.make_tensor_value_info(n, TensorProto.INT32, ["batch", 4]) for n in ("a", "b")],
        [helper.make_tensor_value_info(n, TensorProto.INT32, ["batch", 4]) for n in ("sum", "difference")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


FAST_LOAD = """
load:
  generator: builtin
  concurrency: [1]
  warmup_s: 0.1
  window_s: 0.2
  stability_tolerance: 1.0
  max_windows: 3
"""


def child_processes() -> list[str]:
    """The pids of this process's children."""
    me = str(os.getpid())
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:
            children.append(stat.parent.name)
    return children


def refused(argv: list[str], capsys, results: Path, *expected: str) -> str:
    """``sweeper ARGV`` exits 2 with every one of ``expected`` in one bounded message, no
    traceback, nothing written under ``results`` and no child process started."""
    started, children = time.perf_counter(), set(child_processes())
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    for words in expected:
        assert words in err
    assert "Traceback" not in err
    assert len(err) < 2000, "messages are bounded"
    assert not results.exists(), "nothing is written"
    assert set(child_processes()) <= children, "nothing is started (no server, no watchdog, no perf_analyzer)"
    assert time.perf_counter() - started < 30
    return err


def run_refused(spec: Path, capsys, *expected: str) -> str:
    """``sweeper run`` of a spec written in a test's folder is refused (see ``refused``)."""
    results = spec.parent / "results"
    return refused(["run", str(spec), "--results-dir", str(results)], capsys, results, *expected)
