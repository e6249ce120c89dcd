"""``sweeper init``: what it reads of each kind of source, the guesses it marks, and the sources
it refuses (exit 2, nothing written). Running what it writes is tests/integration/test_init.py."""

from __future__ import annotations

import sys

import yaml

from sweeper.cli import main
from sweeper.spec import load_spec
from tests.conftest import refused
from tests.repositories import unbatched_python_repository

CONV = """
import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, images):
        return self.conv(images).mean(dim=(2, 3))


class Encoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.tokens = torch.nn.Embedding(100, 8)
        self.kinds = torch.nn.Embedding(2, 8)

    def forward(self, input_ids, attention_mask, token_type_ids):
        hidden = self.tokens(input_ids) + self.kinds(token_type_ids)
        return (hidden * attention_mask.unsqueeze(-1)).sum(dim=1)


class Odd(torch.nn.Module):
    def forward(self, x):
        return x.reshape(-1, 3, 5).sum(dim=1)


def net():
    return Net()


def encoder():
    return Encoder()


def odd():
    return Odd()
"""


def _init(tmp_path, monkeypatch, source: str) -> dict:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nets.py").write_text(CONV)
    out = tmp_path / "spec.yaml"
    assert main(["init", source, "-o", str(out), "--trials", "2"]) == 0
    text = out.read_text()
    assert text.startswith("# A first sweep of")
    return {"text": text, "spec": yaml.safe_load(text), "loaded": load_spec(out)}


def test_a_convolution_gets_channels_over_an_image_and_the_guess_is_marked(tmp_path, monkeypatch):
    written = _init(tmp_path, monkeypatch, "nets:net")
    assert written["spec"]["model"]["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [3, 224, 224]}]
    assert (
        "# CHECK: model.inputs are guessed from forward(images) and the first layer (Conv2d(3, ...))" in written["text"]
    )
    assert written["spec"]["search_space"]["precision"] == ["fp32", "fp16", "int8"]
    assert written["spec"]["study"]["trials"] == 2


def test_token_ids_stay_below_the_embedding_and_masks_are_zero_or_one(tmp_path, monkeypatch):
    spec = _init(tmp_path, monkeypatch, "nets:encoder")["spec"]
    assert [i["name"] for i in spec["model"]["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert {i["datatype"] for i in spec["model"]["inputs"]} == {"INT64"}
    assert spec["model"]["example_inputs"]["ranges"] == {
        "input_ids": {"low": 0, "high": 100},
        "attention_mask": {"low": 0, "high": 2},
        "token_type_ids": {"low": 0, "high": 2},
    }


def test_a_guess_the_model_does_not_run_on_is_said_and_the_spec_is_refused_by_its_check(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nets.py").write_text(CONV)
    out = tmp_path / "odd.yaml"
    assert main(["init", "nets:odd", "-o", str(out)]) == 2, "written, but it does not check"
    err = capsys.readouterr().err
    assert "CHECK: the model did not run on these guessed inputs (RuntimeError" in err
    assert "model.inputs" in err and "Traceback" not in err
    assert "# CHECK: the model did not run on these guessed inputs" in out.read_text()


def test_a_folder_without_batching_gets_no_batching_knobs_and_its_own_config_as_baseline(tmp_path, monkeypatch):
    unbatched_python_repository(tmp_path / "models")
    written = _init(tmp_path, monkeypatch, "models/doubler")
    spec, loaded = written["spec"], written["loaded"]
    assert set(spec["search_space"]) == {"instance_count", "protocol"}, "no batching, no conversion (python)"
    assert "baseline" not in spec and spec["model"]["source"] == {"repository": "models/doubler"}
    assert loaded.baseline.max_batch_size == 0 and loaded.baseline.precision == "native"


def test_printed_without_output(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["init", "sweeper.examples:mlp"]) == 0
    spec = yaml.safe_load(capsys.readouterr().out)
    assert spec["model"]["source"] == {"pytorch": "sweeper.examples:mlp"}
    assert spec["model"]["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [256]}]
    assert not list(tmp_path.iterdir()), "nothing written"


def test_sources_that_are_none_of_the_three_kinds_are_refused(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "spec.yaml"
    (tmp_path / "weights.bin").write_bytes(b"\0")
    unbatched_python_repository(tmp_path / "models")
    for source, words in (
        (str(tmp_path / "weights.bin"), "not an ONNX file (.onnx), a Triton model folder"),
        ("no_such_module:make", "cannot import module 'no_such_module'"),
        (str(tmp_path / "models"), "is a model repository: give one model's folder"),
    ):
        refused(["init", source, "-o", str(out)], capsys, out, words)
    missing = tmp_path / "missing" / "dir" / "spec.yaml"
    refused(["init", "no_such_module:make", "-o", str(missing)], capsys, missing.parent.parent, "-o", "does not exist")
    existing = tmp_path / "existing.yaml"
    existing.write_text("keep me")
    assert main(["init", "sweeper.examples:mlp", "-o", str(existing)]) == 2
    assert "exists; sweeper init does not overwrite it" in capsys.readouterr().err
    assert existing.read_text() == "keep me"


def test_generic_names_take_the_folders_or_modules_and_a_study_is_not_shared(tmp_path, capsys, monkeypatch):
    from sweeper.examples import mlp_onnx

    (tmp_path / "classifier").mkdir()
    model = mlp_onnx(tmp_path / "classifier" / "model.onnx")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results" / "classifier").mkdir(parents=True)  # a study of that name was run here
    out = tmp_path / "classifier.yaml"
    assert main(["init", str(model), "-o", str(out), "--latency-budget", "10"]) == 0, capsys.readouterr().err
    spec = yaml.safe_load(out.read_text())
    assert spec["model"]["name"] == "classifier", "model.onnx names nothing: its folder does"
    assert spec["study"]["name"] == "classifier-2", "the results folder already has a study 'classifier'"
    loaded = load_spec(out)
    assert loaded.ranking.columns == ["capacity@p99_ms<=10", "server_memory_mb"]
    assert loaded.ranking.primary == "capacity@p99_ms<=10"
    assert loaded.ranking.constraints[0].label == "p99_ms@c1<=10"
    (tmp_path / "models_hf.py").write_text("from sweeper.examples import mlp as make\n")
    printed = tmp_path / "hf.yaml"
    assert main(["init", "models_hf:make", "-o", str(printed)]) == 0, capsys.readouterr().err
    assert yaml.safe_load(printed.read_text())["model"]["name"] == "models_hf", "make names nothing: its module does"
    for budget in ("0", "-3", "nan"):
        refused(["init", str(model), "--latency-budget", budget], capsys, tmp_path / "nothing", "--latency-budget")


def test_a_factory_is_imported_from_the_specs_folder_as_run_imports_it(tmp_path, capsys, monkeypatch):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir(), elsewhere.mkdir()
    (project / "my_models.py").write_text("from sweeper.examples import mlp as make\n")
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr("sys.path", list(sys.path))  # the imports below leave no folder on the path
    spec = project / "s.yaml"
    assert main(["init", "my_models:make", "-o", str(spec)]) == 0, capsys.readouterr().err
    assert load_spec(spec).model.kind == "pytorch", "sweeper run finds it where init did"
    refused(
        ["init", "my_models_elsewhere:make", "-o", str(elsewhere / "s.yaml")],
        capsys,
        elsewhere / "results",
        f"cannot import module 'my_models_elsewhere' (from {elsewhere.resolve()} or the installed packages)",
    )
