"""Models and servers shared by the benchmarks (not a test helper: benchmarks stand alone)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from sweeper.data import generate_samples
from sweeper.launchers import Launcher, Server
from sweeper.load import Workload
from sweeper.repository import write_model
from sweeper.source import ModelSource, from_onnx, from_pytorch
from sweeper.tensors import TensorSpec
from sweeper.triton_config import apply_trial
from sweeper.vocabulary import TrialConfig


def demo_model(folder: Path) -> ModelSource:
    """The demo's MLP (sweeper.examples:mlp, 256 features -> 1000 scores), exported to ONNX."""
    inputs = [TensorSpec("features", "FP32", (256,))]
    example = generate_samples(inputs, 1, low=0, high=1, seed=0).batch(0, 1, batched=True)
    return from_pytorch("sweeper.examples:mlp", "demo_mlp", inputs, folder, example)


def wide_output_model(folder: Path) -> ModelSource:
    """1 KiB in, 1 MiB out per request ([256, 1024] FP32): the transfer, not the compute, costs."""
    graph = helper.make_graph(
        [
            helper.make_node("Unsqueeze", ["x", "axis"], ["u"]),
            helper.make_node("Expand", ["u", "shape"], ["y"]),
        ],
        "wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1024, 256])],
        [
            helper.make_tensor("axis", TensorProto.INT64, [1], [1]),
            helper.make_tensor("shape", TensorProto.INT64, [3], [1, 1024, 1]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "wide.onnx"
    onnx.save(model, str(path))
    return from_onnx(path, "wide")


def workload(source: ModelSource, batch_size: int = 1) -> Workload:
    """Eight generated samples, ``batch_size`` a request."""
    samples = generate_samples(list(source.inputs), 8, low=0, high=1, seed=0)
    return Workload(source.name, source.inputs, source.outputs, samples, batch_size, True)


@contextlib.contextmanager
def serve(launcher: Launcher, source: ModelSource, config: TrialConfig, folder: Path) -> Iterator[Server]:
    """A fresh server for ``source`` with ``config`` (python backend: the local server has no
    onnxruntime backend), stopped on the way out."""
    model = apply_trial(source.template, config, serve_with="python")
    repository = folder / "repository"
    write_model(repository, source, model, source.onnx_file)
    server = launcher.start(repository, folder / "server.log", {}, model_name=source.name, complete_config=True)
    try:
        yield server
    finally:
        server.stop()
