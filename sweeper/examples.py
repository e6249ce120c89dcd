"""Small models shipped with the package for the example specs, tests and benchmarks (no
downloads): PyTorch factories for specs, and ONNX files built with ``onnx.helper``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper
from torch import nn

TAGS = 14041  # the article's output width


def mlp() -> nn.Module:
    """The demo model: 256 features in, 1000 scores out; small enough for 2 CPU cores."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 1000))


class Tagger(nn.Module):
    """The article's shape of problem: 512 tokens in, a [512, 14041] score matrix out (28.8 MB)."""

    def __init__(self, vocabulary: int = 30522, width: int = 256) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocabulary, width)
        self.encoder = nn.TransformerEncoderLayer(width, nhead=4, dim_feedforward=4 * width, batch_first=True)
        self.head = nn.Linear(width, TAGS)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Scores of every tag for every token."""
        return self.head(self.encoder(self.embed(tokens)))


def tagger() -> nn.Module:
    """The seed case's model (../shared/seed/README.md): a 28.8 MB output per request."""
    torch.manual_seed(0)
    return Tagger()


def mlp_onnx(path: Path, *, features: int = 16, outputs: int = 4, hidden: int = 32, seed: int = 0) -> Path:
    """A two-layer MLP as an ONNX file: input 'x' [batch, features], output 'y' [batch, outputs]."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.3, (features, hidden)).astype(np.float32)
    w2 = rng.normal(0, 0.3, (hidden, outputs)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "w2"], ["y"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", outputs])],
        [
            helper.make_tensor("w1", TensorProto.FLOAT, w1.shape, w1.ravel()),
            helper.make_tensor("w2", TensorProto.FLOAT, w2.shape, w2.ravel()),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
