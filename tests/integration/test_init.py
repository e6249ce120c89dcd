"""``sweeper init X -o s.yaml && sweeper run s.yaml`` completes for each kind of source, on the
real server, with the baseline as trial 0 (the runs are cut to two trials by ``init --trials``)."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from sweeper.cli import main
from tests.conftest import fixed_axis_onnx, refused
from tests.repositories import gpu_onnx_repository, string_python_repository


def _source(kind: str, tmp_path, mlp_file) -> str:
    if kind == "onnx":
        return str(shutil.copy(mlp_file, tmp_path / "model.onnx"))
    if kind == "pytorch":
        return "sweeper.examples:mlp"
    folder, _ = string_python_repository(tmp_path / "models")  # a STRING input whose length is open
    return str(folder)


def _quicker(spec) -> None:
    """Confirmation and measurement windows have tests of their own (test_confirm.py,
    test_load.py): the spec otherwise runs as ``init`` wrote it, with short windows."""
    text = spec.read_text().replace("confirm_repeats: 2", "confirm_repeats: 0")
    assert "\nload:\n" in text, text
    spec.write_text(text.replace("\nload:\n", "\nload:\n  warmup_s: 0.1\n  window_s: 0.2\n  max_windows: 3\n"))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["onnx", "pytorch", "python-folder-with-strings"])
def test_the_spec_init_writes_runs_as_it_is(kind, tmp_path, mlp_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "s.yaml"
    assert main(["init", _source(kind, tmp_path, mlp_file), "-o", str(spec), "--trials", "2"]) == 0
    _quicker(spec)
    assert main(["run", str(spec), "--results-dir", str(tmp_path / "results")]) == 0
    (study,) = (tmp_path / "results").iterdir()
    trials = pd.read_csv(study / "trials.csv")
    # A precision that fails the accuracy guard here (INT8 of the MLP on some CPUs) costs one
    # trial that does not count toward study.trials: two configurations that serve, and that one.
    assert (trials["state"] == "COMPLETE").all(), trials["failure"].tolist()
    dropped = trials["infeasible"].fillna("").str.contains("cosine similarity")
    assert len(trials[~dropped]) == 2 and len(trials) <= 2 + dropped.sum(), trials["infeasible"].tolist()
    assert trials.set_index("number").loc[0, "baseline"]
    assert (study / "report.html").is_file()


def _iris_classifier(path, *, zipmap: bool):
    """A scikit-learn pipeline (scaler, random forest) converted by skl2onnx, as a user would."""
    import numpy as np
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features, labels = load_iris(return_X_y=True)
    features = features.astype(np.float32)
    forest = RandomForestClassifier(n_estimators=10, random_state=0)
    pipeline = make_pipeline(StandardScaler(), forest).fit(features, labels)
    options = None if zipmap else {id(forest): {"zipmap": False}}
    path.parent.mkdir(parents=True)
    path.write_bytes(to_onnx(pipeline, features[:1], options=options).SerializeToString())
    return path


@pytest.mark.slow
def test_a_skl2onnx_classifier_sweeps_and_exports_its_label_and_probabilities(tmp_path, monkeypatch, capsys):
    """With zipmap off, the label is [N] (the batch axis alone: dims [1], reshape []) and the
    probabilities [N, 3]; with skl2onnx's default ZipMap, init names the output and the fix."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    monkeypatch.chdir(tmp_path)
    zipmapped = _iris_classifier(tmp_path / "iris_zipmap" / "model.onnx", zipmap=True)
    err = refused(["init", str(zipmapped), "-o", str(tmp_path / "z.yaml")], capsys, tmp_path / "z.yaml")
    assert "'output_probability' is a sequence of maps (a ZipMap)" in err and "'zipmap': False" in err
    model = _iris_classifier(tmp_path / "iris" / "model.onnx", zipmap=False)
    spec = tmp_path / "s.yaml"
    assert main(["init", str(model), "-o", str(spec), "--trials", "2"]) == 0
    _quicker(spec)
    assert main(["run", str(spec), "--results-dir", "results"]) == 0
    trials = pd.read_csv(tmp_path / "results" / "iris" / "trials.csv")
    # A tree ensemble has nothing to quantize, and FP16 only wraps it in casts: each says so once.
    converted = trials["precision"] != "fp32"
    assert trials.loc[converted, "failure"].str.contains("changes no operator of this model").all()
    assert trials.loc[converted, "precision"].is_unique, "a precision that changes nothing costs one trial"
    assert (trials.loc[~converted, "state"] == "COMPLETE").all() and (~converted).any(), trials["failure"].tolist()
    assert main(["export", "results/iris", "--out", "deploy"]) == 0
    exported = text_format.Parse((tmp_path / "deploy" / "iris" / "config.pbtxt").read_text(), mc.ModelConfig())
    outputs = {o.name: o for o in exported.output}
    assert list(outputs["label"].dims) == [1] and outputs["label"].HasField("reshape")
    assert list(outputs["label"].reshape.shape) == [] and list(outputs["probabilities"].dims) == [3]
    assert (tmp_path / "deploy" / "iris" / "1" / "model.onnx").is_file()


def test_a_model_exported_without_a_dynamic_batch_axis_is_swept_and_exported_without_batching(
    tmp_path, monkeypatch, capsys, local_launcher
):
    """`init` names the fixed axis and the exporter's fix; no trial sends the model a batch it
    cannot take; the export serves a request of the model's own shape."""
    import numpy as np
    import onnxruntime as ort
    import tritonclient.http as httpclient

    from sweeper.triton_config import parse_pbtxt
    from tests.repositories import infer_mlp

    monkeypatch.chdir(tmp_path)
    model = fixed_axis_onnx(tmp_path / "mlp.onnx")
    spec = tmp_path / "s.yaml"
    assert main(["init", str(model), "-o", str(spec), "--trials", "2"]) == 0
    text = spec.read_text()
    assert "# CHECK: the model's first axis is fixed at 1" in text and "dynamic_axes={'x': {0: 'batch'}" in text
    assert "max_batch_size:" not in text and "max_queue_delay_us:" not in text, (
        "no batching knobs, none in the baseline"
    )
    assert "shape: [1, 16]" in text, "the request is the model's whole shape"
    _quicker(spec)
    assert main(["run", str(spec), "--results-dir", str(tmp_path / "results")]) == 0
    (study,) = (tmp_path / "results").iterdir()
    trials = pd.read_csv(study / "trials.csv")
    assert (trials["state"] == "COMPLETE").all(), trials["failure"].tolist()
    assert (trials["max_batch_size"] == 0).all() and len(trials) >= 2
    assert main(["export", str(study), "--out", str(tmp_path / "deploy")]) == 0
    config = parse_pbtxt((tmp_path / "deploy" / "mlp" / "config.pbtxt").read_text())
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == [1, 16]
    served = tmp_path / "served"  # the config the trial's server loaded (python backend here)
    assert main(["export", str(study), "--out", str(served), "--backend", "python"]) == 0
    x = np.random.default_rng(3).random((1, 16), dtype=np.float32)
    expected = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    with local_launcher.start(served, tmp_path / "server.log", {}, model_name="mlp") as server:
        produced = infer_mlp(httpclient, server.endpoints.http, x)
    np.testing.assert_allclose(produced, expected, atol=5e-3)  # the exported precision may be FP16


def test_a_repository_that_batches_over_a_fixed_axis_is_refused_before_anything_starts(tmp_path, capsys):
    folder = tmp_path / "models" / "mlp"
    (folder / "1").mkdir(parents=True)
    fixed_axis_onnx(folder / "1" / "model.onnx")
    (folder / "config.pbtxt").write_text(
        'backend: "onnxruntime"\nmax_batch_size: 8\n'
        'input {name: "x" data_type: TYPE_FP32 dims: [16]}\noutput {name: "y" data_type: TYPE_FP32 dims: [4]}\n'
    )
    spec = tmp_path / "s.yaml"
    refused(
        ["init", str(folder), "-o", str(spec)],
        capsys,
        spec,
        "max_batch_size 8",
        "input 'x' has a fixed first axis of 1",
        "dynamic_axes",
    )


def test_a_repository_written_for_a_gpu_is_measured_on_this_cpu_and_exported_as_written(tmp_path, monkeypatch, capsys):
    """KIND_GPU instances and a TensorRT accelerator, on a host without a GPU: init says what it
    changes, the baseline is served and measured on the CPU, and the export gives the GPU fields
    back; with --keep-gpu (and server.keep_gpu) the same repository is refused."""
    from tritonclient.grpc import model_config_pb2 as mc

    from sweeper.triton_config import parse_pbtxt

    monkeypatch.chdir(tmp_path)
    folder = gpu_onnx_repository(tmp_path / "models")
    spec = tmp_path / "s.yaml"
    refused(["init", str(folder), "-o", str(spec), "--keep-gpu"], capsys, spec, "asks for a GPU", "KIND_GPU")
    assert main(["init", str(folder), "-o", str(spec), "--trials", "1"]) == 0
    text = spec.read_text()
    assert "# CHECK: this host has no GPU" in text and "KIND_GPU -> KIND_CPU" in text and "['tensorrt'] dropped" in text
    _quicker(spec)
    text = spec.read_text().replace("precision: [native, fp16, int8]", "precision: [native]")
    spec.write_text(text)
    kept = tmp_path / "kept.yaml"
    kept.write_text(text.replace("  launcher: local", "  keep_gpu: true\n  launcher: local"))
    refused(["check", str(kept)], capsys, tmp_path / "results", "server.keep_gpu", "asks for a GPU")
    capsys.readouterr()
    assert main(["run", str(spec), "--results-dir", str(tmp_path / "results")]) == 0
    assert "measured on its CPU (instance_group[0].kind: KIND_GPU -> KIND_CPU" in capsys.readouterr().out
    (study,) = (tmp_path / "results").iterdir()
    trials = pd.read_csv(study / "trials.csv").set_index("number")
    assert trials.loc[0, "state"] == "COMPLETE" and trials.loc[0, "baseline"], trials["failure"].tolist()
    served = parse_pbtxt((study / "trials" / "0" / "config.pbtxt").read_text())
    assert [g.kind for g in served.instance_group] == [mc.ModelInstanceGroup.KIND_CPU] and not served.instance_group[
        0
    ].gpus
    assert not served.optimization.execution_accelerators.gpu_execution_accelerator
    assert main(["export", str(study), "--out", str(tmp_path / "deploy")]) == 0
    exported = parse_pbtxt((tmp_path / "deploy" / "mlp_gpu" / "config.pbtxt").read_text())
    assert exported.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU and list(
        exported.instance_group[0].gpus
    ) == [0]
    (accelerator,) = exported.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP16"
    record = json.loads((tmp_path / "deploy" / "mlp_gpu" / "sweeper-export.json").read_text())
    assert "KIND_GPU -> KIND_CPU" in record["host_changes"][0] and "not a GPU's" in record["host_changes_note"]
