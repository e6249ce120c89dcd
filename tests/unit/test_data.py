"""Request data: perf_analyzer's JSON and .npz read and checked against the model's inputs."""

from __future__ import annotations

import base64
import json
import struct

import numpy as np
import pytest

from sweeper.data import DataError, generate_samples, read_samples, to_wire_bytes
from sweeper.tensors import TensorSpec

IMAGE = TensorSpec("image", "UINT8", (2, 3))
TEXT = TensorSpec("text", "BYTES", (-1,))
SCALE = TensorSpec("scale", "FP32", (1,))


def _write(tmp_path, document) -> object:
    path = tmp_path / "data.json"
    path.write_text(json.dumps(document))
    return path


def test_every_form_of_perf_analyzer_json(tmp_path):
    raw = np.arange(6, dtype=np.uint8)
    strings = to_wire_bytes(np.array([b"hello", b"triton"], dtype=object), "BYTES")
    path = _write(
        tmp_path,
        {
            "data": [
                {"image": [0, 1, 2, 3, 4, 5], "text": {"content": ["a", "bc", "def"], "shape": [3]}, "scale": [0.5]},
                {
                    "image": {"b64": base64.b64encode(raw.tobytes()).decode()},
                    "text": {"content": {"b64": base64.b64encode(strings).decode()}, "shape": [2]},
                    "scale": {"content": [2.0], "shape": [1]},
                },
            ]
        },
    )
    samples = read_samples(path, [IMAGE, TEXT, SCALE])
    assert samples.count == 2
    np.testing.assert_array_equal(samples.arrays["image"][1], raw.reshape(2, 3))
    assert list(samples.arrays["text"][0]) == [b"a", b"bc", b"def"]
    assert list(samples.arrays["text"][1]) == [b"hello", b"triton"]
    assert samples.arrays["scale"][1].dtype == np.float32


def test_requests_cycle_through_the_samples(tmp_path):
    np.savez(tmp_path / "data.npz", scale=np.arange(5, dtype=np.float32).reshape(5, 1))
    samples = read_samples(tmp_path / "data.npz", [SCALE])
    requests = samples.requests(2, batched=True)
    assert len(requests) == 5, "a cycle of 2-sample requests covers every sample"
    assert [r["scale"].ravel().tolist() for r in requests[:3]] == [[0, 1], [2, 3], [4, 0]]
    unbatched = samples.requests(1, batched=False)
    assert unbatched[0]["scale"].shape == (1,)


def test_perf_analyzer_json_round_trips(tmp_path):
    samples = generate_samples([IMAGE, SCALE], 3, low=0, high=10, seed=4)
    again = read_samples(_write(tmp_path, samples.perf_analyzer_json()), [IMAGE, SCALE])
    for name in ("image", "scale"):
        assert len(again.arrays[name]) == len(samples.arrays[name]) == 3
        for a, b in zip(samples.arrays[name], again.arrays[name]):
            np.testing.assert_array_equal(a, b)


MISMATCHES = {
    "unknown-input": (
        {"data": [{"image": [0] * 6, "scale": [1.0], "text": ["a"], "extra": [1]}]},
        "unknown input(s) ['extra']",
    ),
    "missing-input": ({"data": [{"image": [0] * 6, "text": ["a"]}]}, "missing input(s) ['scale']"),
    "wrong-count": (
        {"data": [{"image": [0] * 5, "scale": [1.0], "text": ["a"]}]},
        "has 5 values but shape [2, 3] needs 6",
    ),
    "wrong-shape": (
        {"data": [{"image": {"content": [0] * 6, "shape": [3, 2]}, "scale": [1.0], "text": ["a"]}]},
        "has shape [3, 2] but the model expects [2, 3]",
    ),
    "no-shape-for-variable": (
        {"data": [{"image": [0] * 6, "scale": [1.0], "text": ["a"]}]},
        "has a variable shape [-1]",
    ),
    "float-for-integers": (
        {"data": [{"image": [0.5] * 6, "scale": [1.0], "text": {"content": ["a"], "shape": [1]}}]},
        "expected integers",
    ),
    "out-of-range": (
        {"data": [{"image": [300] * 6, "scale": [1.0], "text": {"content": ["a"], "shape": [1]}}]},
        "outside [0, 255]",
    ),
    "strings-for-numbers": (
        {"data": [{"image": ["a"] * 6, "scale": [1.0], "text": {"content": ["a"], "shape": [1]}}]},
        "expected numbers",
    ),
    "bad-base64": (
        {"data": [{"image": {"b64": "!!"}, "scale": [1.0], "text": {"content": ["a"], "shape": [1]}}]},
        "not valid base64",
    ),
    "sequence-streams": ({"data": [[{"image": [0] * 6}]]}, "sequence models"),
    "empty": ({"data": []}, "at least one entry"),
}


@pytest.mark.parametrize("case", sorted(MISMATCHES))
def test_data_that_does_not_fit_names_the_input(tmp_path, case):
    document, expected = MISMATCHES[case]
    with pytest.raises(
        DataError, match=expected.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(").replace(")", r"\)")
    ):
        read_samples(_write(tmp_path, document), [IMAGE, SCALE, TEXT])


def test_npz_checks_dtype_names_and_counts(tmp_path):
    np.savez(tmp_path / "a.npz", scale=np.ones((3, 1), np.float64))
    with pytest.raises(DataError, match="dtype float64 does not match the model's FP32"):
        read_samples(tmp_path / "a.npz", [SCALE])
    np.savez(tmp_path / "b.npz", scale=np.ones((3, 1), np.float32), image=np.ones((2, 2, 3), np.uint8))
    with pytest.raises(DataError, match="same number"):
        read_samples(tmp_path / "b.npz", [SCALE, IMAGE])
    (tmp_path / "c.txt").write_text("x")
    with pytest.raises(DataError, match=r"must be a \.json"):
        read_samples(tmp_path / "c.txt", [SCALE])


def test_generated_samples_need_concrete_shapes():
    with pytest.raises(DataError, match="input 'text' has a variable shape"):
        generate_samples([TEXT], 2, low=0, high=1, seed=0)
    samples = generate_samples(
        [TensorSpec("ids", "INT64", (4,)), TensorSpec("s", "BYTES", (2,))], 3, low=0, high=30522, seed=0
    )
    assert samples.arrays["ids"][0].dtype == np.int64 and samples.arrays["s"][0][0].__class__ is bytes


def test_wire_bytes_of_strings_carry_their_lengths():
    raw = to_wire_bytes(np.array([b"ab", b""], dtype=object), "BYTES")
    assert raw == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 0)
