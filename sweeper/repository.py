"""Writes a Triton model repository: ``<root>/<model>/config.pbtxt`` and ``<root>/<model>/1/``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from sweeper.triton_config import to_pbtxt

PYTHON_MODEL = Path(__file__).with_name("python_backend") / "model.py"


def write_model_repository(root: Path, model: mc.ModelConfig, onnx_path: Path, *, link: bool = True) -> Path:
    """Lay out one model. Trials hard-link the ONNX file where they can (it can be large and
    every trial has a repository); an export copies it, to stand on its own."""
    version = root / model.name / "1"
    version.mkdir(parents=True, exist_ok=True)
    (root / model.name / "config.pbtxt").write_text(to_pbtxt(model))
    target = version / "model.onnx"
    target.unlink(missing_ok=True)
    try:
        if not link:
            raise OSError("copy requested")
        os.link(onnx_path, target)
    except OSError:  # another file system, or a copy was asked for
        shutil.copyfile(onnx_path, target)
    if model.backend == "python":
        shutil.copyfile(PYTHON_MODEL, version / "model.py")
    return root
