"""A model folder as the source: its config is the baseline, knobs it cannot have are refused,
and every refusal is exit 2 with the reason, nothing written, nothing started."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sweeper.spec import load_spec
from sweeper.vocabulary import TrialConfig
from tests.conftest import run_refused, write_spec
from tests.repositories import (
    REFUSED,
    add_sub_repository,
    refused_repository,
    string_python_repository,
    unbatched_python_repository,
)

SPEC = """
study: {name: repo, trials: 2}
model:
  source: {repository: FOLDER}
SPACE
objectives:
  - {metric: p50_ms, concurrency: 1, direction: minimize}
"""


def _spec(tmp_path, folder, space: str = "", data=None):
    body = SPEC.replace("FOLDER", str(folder)).replace("SPACE", space)
    if data is not None:
        body = body.replace("  source: {repository:", f"  input_data: {data}\n  source: {{repository:")
    return write_spec(tmp_path, body)


def test_the_folders_config_is_the_baseline_and_kept_knobs_are_its_own(tmp_path):
    folder = add_sub_repository(tmp_path / "models")
    loaded = load_spec(_spec(tmp_path, folder, "search_space: {instance_count: [1, 2], protocol: [http, grpc]}"))
    assert loaded.model.name == "add_sub" and loaded.model.kind == "repository"
    assert loaded.baseline == TrialConfig(8, 100, 1, "http", "native")
    assert loaded.space["max_batch_size"] == [8] and loaded.space["max_queue_delay_us"] == [100]
    assert loaded.space["precision"] == ["native"]
    assert [t.datatype for t in loaded.model.inputs] == ["INT32", "INT32"] and len(loaded.model.outputs) == 2


def test_an_onnx_folder_can_be_converted(tmp_path):
    folder = add_sub_repository(tmp_path / "models")
    loaded = load_spec(_spec(tmp_path, folder, "search_space: {precision: [native, fp16]}"))
    assert loaded.space["precision"] == ["native", "fp16"] and loaded.model.convertible


def test_string_inputs_take_their_shapes_from_the_data(tmp_path):
    folder, data = string_python_repository(tmp_path / "models")
    loaded = load_spec(_spec(tmp_path, folder, data=data))
    assert loaded.samples.count == 2 and list(loaded.samples.arrays["text"][0]) == [b"triton", b"sweeper", b"measures"]


REFUSALS = {
    "unbatched-max-batch": (
        unbatched_python_repository,
        "search_space: {max_batch_size: [1, 2]}",
        "the model has max_batch_size 0 (no batching)",
    ),
    "unbatched-delay": (
        unbatched_python_repository,
        "search_space: {max_queue_delay_us: [off, 0]}",
        "max_batch_size and max_queue_delay_us cannot be swept",
    ),
    "python-precision": (
        unbatched_python_repository,
        "search_space: {precision: [native, fp16]}",
        "'fp16' is not available for this model; allowed: native",
    ),
    "fp32-for-a-folder": (add_sub_repository, "search_space: {precision: [fp32]}", "'fp32' is not available"),
}


def test_a_space_that_leaves_out_the_folders_own_values_keeps_them(tmp_path):
    """NVIDIA's examples have configs the user's first space rarely names: the folder's own
    delay (100 us here) joins the choices instead of the spec being refused."""
    loaded = load_spec(
        _spec(tmp_path, add_sub_repository(tmp_path / "models"), "search_space: {max_queue_delay_us: [off, 0]}")
    )
    assert loaded.baseline.max_queue_delay_us == 100 and loaded.space["max_queue_delay_us"] == ["off", 0, 100]
    assert loaded.added_to_space == {"max_queue_delay_us": 100}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_knobs_that_do_not_apply_are_refused(tmp_path, case, capsys):
    make, space, expected = REFUSALS[case]
    spec = _spec(tmp_path, make(tmp_path / "models"), space)
    run_refused(spec, capsys, str(spec), expected)


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_folders_the_sweeper_cannot_measure_are_refused(tmp_path, case, capsys):
    spec = _spec(tmp_path, refused_repository(tmp_path / "models", case))
    run_refused(spec, capsys, REFUSED[case][1])


DATA_PROBLEMS = {
    "unknown-name": ({"data": [{"words": {"content": ["a"], "shape": [1]}}]}, "unknown input(s) ['words']"),
    "wrong-datatype": (
        {"data": [{"text": {"content": [1, 2], "shape": [2]}}]},
        "input 'text' (BYTES): expected strings",
    ),
    "wrong-rank": (
        {"data": [{"text": {"content": ["a", "b"], "shape": [1, 2]}}]},
        "has shape [1, 2] but the model expects [-1]",
    ),
}


@pytest.mark.parametrize("case", sorted(DATA_PROBLEMS))
def test_input_data_that_does_not_fit_the_model_is_refused(tmp_path, case, capsys):
    folder, _ = string_python_repository(tmp_path / "models")
    data = tmp_path / "bad.json"
    data.write_text(json.dumps(DATA_PROBLEMS[case][0]))
    spec = _spec(tmp_path, folder, data=data)
    run_refused(spec, capsys, "model.input_data", DATA_PROBLEMS[case][1])


def test_an_npz_with_the_wrong_dtype_is_refused(tmp_path, capsys):
    folder = unbatched_python_repository(tmp_path / "models")
    np.savez(tmp_path / "data.npz", x=np.ones((3, 16), np.int32))
    spec = _spec(tmp_path, folder, data=tmp_path / "data.npz")
    run_refused(spec, capsys, "dtype int32 does not match the model's FP32")
