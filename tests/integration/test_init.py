"""``sweeper init X -o s.yaml && sweeper run s.yaml`` completes for each kind of source, on the
real server, with the baseline as trial 0 (the runs are cut to two trials by ``init --trials``)."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from sweeper.cli import main
from tests.repositories import string_python_repository


def _source(kind: str, tmp_path, mlp_file) -> str:
    if kind == "onnx":
        return str(shutil.copy(mlp_file, tmp_path / "model.onnx"))
    if kind == "pytorch":
        return "sweeper.examples:mlp"
    folder, _ = string_python_repository(tmp_path / "models")  # a STRING input whose length is open
    return str(folder)


@pytest.mark.parametrize("kind", ["onnx", "pytorch", "python-folder-with-strings"])
def test_the_spec_init_writes_runs_as_it_is(kind, tmp_path, mlp_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "s.yaml"
    assert main(["init", _source(kind, tmp_path, mlp_file), "-o", str(spec), "--trials", "2"]) == 0
    assert main(["run", str(spec), "--results-dir", str(tmp_path / "results")]) == 0
    (study,) = (tmp_path / "results").iterdir()
    trials = pd.read_csv(study / "trials.csv")
    assert len(trials) == 2 and (trials["state"] == "COMPLETE").all(), trials["failure"].tolist()
    assert trials.set_index("number").loc[0, "baseline"]
    assert (study / "report.html").is_file()
