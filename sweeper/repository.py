"""Writes one model into a Triton model repository: ``<root>/<model>/config.pbtxt`` and versions.

A trial's repository hard-links the model's files where it can (they can be large, and every
trial has a repository); an export copies them, to stand on its own. An ONNX model served by a
server without the onnxruntime backend gets the python-backend model (``model.py``) beside its
``model.onnx``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from sweeper.files import write_atomic
from sweeper.source import ModelSource
from sweeper.triton_config import to_pbtxt

PYTHON_MODEL = Path(__file__).with_name("python_backend") / "model.py"


def _place(source: Path, target: Path, *, link: bool) -> None:
    target.unlink(missing_ok=True)
    if link:
        try:
            os.link(source, target)
            return
        except OSError:  # another file system
            pass
    shutil.copyfile(source, target)


def _copy_tree(source: Path, target: Path, *, link: bool) -> None:
    for path in sorted(source.rglob("*")):
        destination = target / path.relative_to(source)
        if path.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
        elif path.name != "config.pbtxt" or path.parent != source:
            destination.parent.mkdir(parents=True, exist_ok=True)
            _place(path, destination, link=link)


def write_model(
    root: Path,
    source: ModelSource,
    config: mc.ModelConfig,
    model_file: Path | None,
    *,
    link: bool = True,
    folder: Path | None = None,
) -> Path:
    """Lay out ``source`` as ``<root>/<model>`` (or ``folder``) with ``config``; ``model_file``
    (an ONNX file of the trial's precision) replaces the model's own. Returns the folder."""
    folder = folder or root / config.name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    python = config.backend == "python" and source.onnx_file is not None
    if source.kind == "repository":
        version = source.version
        if python:  # the python-backend model serves the one version Triton would load
            _copy_tree(source.folder / version, folder / version, link=link)
            (folder / version / source.onnx_file.name).unlink(missing_ok=True)
        else:
            _copy_tree(source.folder, folder, link=link)
        target_name = "model.onnx" if python else (source.onnx_file.name if source.onnx_file else None)
    else:
        version, target_name = "1", "model.onnx"
    (folder / version).mkdir(parents=True, exist_ok=True)
    if model_file is not None and target_name is not None:
        _place(model_file, folder / version / target_name, link=link)
    if python:
        shutil.copyfile(PYTHON_MODEL, folder / version / "model.py")
    write_atomic(folder / "config.pbtxt", to_pbtxt(config))
    return folder
