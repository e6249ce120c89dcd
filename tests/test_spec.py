"""Every bad-input case: one clear message naming file and key, exit status 2, nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sweeper.cli import main
from sweeper.spec import TrialConfig, load_spec
from tests.conftest import REPO, write_spec

VALID = """
study: {name: s1, trials: 2}
model:
  name: mlp
  source: {onnx: MODEL}
search_space:
  max_batch_size: [1, 8]
  max_queue_delay_us: [0, 100]
  instance_count: [1]
  protocol: [http, grpc]
  precision: [fp32]
baseline: {max_batch_size: 8, max_queue_delay_us: 100, instance_count: 1, protocol: http}
objectives:
  - {metric: p50_ms, concurrency: 1, direction: minimize}
"""


def _spec(tmp_path: Path, mlp_onnx: Path, body: str = VALID) -> Path:
    return write_spec(tmp_path, body.replace("MODEL", str(mlp_onnx)))


def test_valid_spec_loads_and_resolves_the_baseline(tmp_path, mlp_onnx):
    loaded = load_spec(_spec(tmp_path, mlp_onnx))
    assert loaded.name == "s1"
    assert loaded.baseline == TrialConfig(8, 100, 1, "http", "fp32")
    assert loaded.spec.study.seed == 0 and loaded.spec.load.concurrency == [1]


def test_shipped_examples_are_valid():
    for name in ("demo.yaml", "seed-case.yaml"):
        loaded = load_spec(REPO / "search_spaces" / name)
        assert loaded.baseline is not None


def test_baseline_from_an_existing_config_pbtxt(tmp_path, mlp_onnx):
    (tmp_path / "config.pbtxt").write_text(
        'name: "mlp"\nmax_batch_size: 8\ndynamic_batching { max_queue_delay_microseconds: 100 }\n'
        "instance_group { count: 1 kind: KIND_CPU }\n"
    )
    body = VALID.replace(
        "baseline: {max_batch_size: 8, max_queue_delay_us: 100, instance_count: 1, protocol: http}",
        "baseline: {config_pbtxt: config.pbtxt, protocol: grpc}",
    )
    assert load_spec(_spec(tmp_path, mlp_onnx, body)).baseline == TrialConfig(8, 100, 1, "grpc", "fp32")


BAD = {
    "typo": (("max_queue_delay_us: [0, 100]", "max_queue_delay: [0, 100]"), "search_space.max_queue_delay: unknown key; did you mean 'max_queue_delay_us'?"),
    "wrong-type": (("trials: 2", "trials: many"), "study.trials"),
    "negative": (("max_queue_delay_us: [0, 100]", "max_queue_delay_us: [-5, 100]"), "search_space.max_queue_delay_us.0"),
    "empty": (("instance_count: [1]", "instance_count: []"), "search_space.instance_count"),
    "bad-choice": (("precision: [fp32]", "precision: [fp32, int4]"), "search_space.precision.1"),
    "missing-model": (("source: {onnx: MODEL}", "source: {onnx: nowhere.onnx}"), "model.source.onnx: no such file"),
    "no-factory-module": (("source: {onnx: MODEL}", "source: {pytorch: 'no_such_module:make'}\n  inputs: [{name: x, datatype: FP32, shape: [16]}]"), "model.source.pytorch: cannot import module 'no_such_module'"),
    "factory-not-callable": (("source: {onnx: MODEL}", "source: {pytorch: 'sweeper.examples:TAGS'}\n  inputs: [{name: x, datatype: FP32, shape: [16]}]"), "model.source.pytorch: 'sweeper.examples' has no callable 'TAGS'"),
    "both-sources": (("source: {onnx: MODEL}", "source: {onnx: MODEL, pytorch: 'a:b'}"), "model.source: give exactly one"),
    "objective-level": (("concurrency: 1, direction", "concurrency: 4, direction"), "which load.concurrency [1] does not include"),
    "baseline-outside": (("baseline: {max_batch_size: 8", "baseline: {max_batch_size: 16"), "baseline.max_batch_size: 16 is not among search_space.max_batch_size"),
    "missing-key": (("  - {metric: p50_ms, concurrency: 1, direction: minimize}\n", "  - {metric: p50_ms, concurrency: 1}\n"), "objectives.0.direction: required key is missing"),
    "bad-metric": (("metric: p50_ms", "metric: p42_ms"), "objectives.0.metric"),
    "yaml": (("study: {name: s1, trials: 2}", "study: {name: s1, trials: 2"), "the YAML does not parse"),
    "tensorrt-on-python": (("precision: [fp32]", "precision: [fp32, fp16_trt]\nserver: {backend: python}"),
                           "runs TensorRT inside Triton's onnxruntime backend"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_spec_exits_2_with_file_and_key_and_writes_nothing(case, tmp_path, mlp_onnx, capsys):
    (old, new), expected = BAD[case]
    assert old in VALID, case
    spec = _spec(tmp_path, mlp_onnx, VALID.replace(old, new))
    results = tmp_path / "results"
    status = main(["run", str(spec), "--results-dir", str(results)])
    err = capsys.readouterr().err
    assert status == 2
    assert str(spec) in err
    assert expected in err
    assert "Traceback" not in err
    assert not results.exists()


def test_unknown_key_lists_what_is_allowed(tmp_path, mlp_onnx, capsys):
    spec = _spec(tmp_path, mlp_onnx, VALID + "lod: {concurrency: [1]}\n")
    assert main(["run", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "lod: unknown key; did you mean 'load'?" in err
    assert "Allowed here: study, model, server, search_space" in err


def test_command_line_trials_must_be_positive(tmp_path, mlp_onnx, capsys):
    spec = _spec(tmp_path, mlp_onnx)
    assert main(["run", str(spec), "--trials", "0", "--results-dir", str(tmp_path / "r")]) == 2
    assert "--trials must be at least 1" in capsys.readouterr().err


def test_console_script_reports_a_missing_spec_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "sweeper.cli", "run", str(tmp_path / "absent.yaml")],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == 2
    assert f"{tmp_path / 'absent.yaml'}: cannot read the spec" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results").exists()


def test_tensorrt_precisions_need_a_gpu_server(tmp_path, mlp_onnx, capsys):
    spec = _spec(tmp_path, mlp_onnx, VALID.replace("precision: [fp32]", "precision: [fp32, int8_trt]"))
    assert main(["run", str(spec), "--results-dir", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "['int8_trt'] needs Triton's onnxruntime backend on a GPU (this server: python backend, no GPU)" in err
    assert "hint: use NVIDIA's Triton image" in err


@pytest.mark.parametrize(
    "name, sampler",
    [("tpe", "TPESampler"), ("nsga2", "NSGAIISampler"), ("gp", "GPSampler"), ("random", "RandomSampler"),
     ("grid", "BruteForceSampler")],
)
def test_every_sampler_name_builds_a_seeded_sampler(tmp_path, mlp_onnx, name, sampler):
    from sweeper.study import make_sampler

    spec = _spec(tmp_path, mlp_onnx, VALID.replace("trials: 2}", f"trials: 2, sampler: {name}, seed: 0}}"))
    built = make_sampler(load_spec(spec))
    assert type(built).__name__ == sampler
