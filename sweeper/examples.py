"""Small PyTorch models shipped with the package for the example specs (no downloads)."""

from __future__ import annotations

import torch
from torch import nn

TAGS = 14041  # the article's output width
SEQUENCE = 512


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
        return self.head(self.encoder(self.embed(tokens)))


def tagger() -> nn.Module:
    torch.manual_seed(0)
    return Tagger()
