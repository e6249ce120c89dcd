"""Shared by both tiers: small real models (ONNX graphs, model folders) and specs in tmp dirs.

``tests/unit`` needs no server, Docker, database or browser (``make unit``); ``tests/integration``
runs against the real parts (``make test`` runs both).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from sweeper.examples import mlp_onnx

REPO = Path(__file__).resolve().parent.parent


def write_spec(folder: Path, body: str, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


@pytest.fixture(scope="session")
def mlp_file(tmp_path_factory) -> Path:
    """The test MLP: x FP32 [batch, 16] -> y FP32 [batch, 4]."""
    return mlp_onnx(tmp_path_factory.mktemp("model") / "mlp.onnx")


def fixed_batch_onnx(path: Path) -> Path:
    """An MLP exported without a dynamic batch axis: a batch of more than one fails at run time."""
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
  warmup_s: 0.2
  window_s: 0.3
  stability_tolerance: 1.0
  max_windows: 3
"""
