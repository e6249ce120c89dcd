"""The measurement's pure parts: requests on the wire, the output check, the stability rule, the
server statistics diff and perf_analyzer's report (a CSV and summary it wrote, kept as fixtures)."""

from __future__ import annotations

import json
from pathlib import Path

import hpack
import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from sweeper.launchers import Endpoints
from sweeper.load import server_times, windows_agree
from sweeper.load._grpc import METHOD, request_headers
from sweeper.load._loops import MAX_IN_FLIGHT
from sweeper.load._perf_analyzer import arguments, parse
from sweeper.load._wire import InferenceError, check_outputs, grpc_message, grpc_outputs, http_request
from sweeper.tensors import TensorSpec
from sweeper.vocabulary import Level

FIXTURES = Path(__file__).with_name("fixtures")
INPUTS = [TensorSpec("x", "FP32", (3,)), TensorSpec("s", "BYTES", (1,))]
TENSORS = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.array([[b"ab"], [b"c"]], dtype=object)}
OUTPUTS = [TensorSpec("y", "FP32", (4,))]


def test_http_request_is_one_binary_infer_call():
    request = http_request("m", INPUTS, TENSORS, ["y"], "127.0.0.1:8000")
    head, _, body = request.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v2/models/m/infer HTTP/1.1"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["Accept-Encoding"] == "identity", "as perf_analyzer: no compressed responses"
    length = int(headers["Inference-Header-Content-Length"])
    assert int(headers["Content-Length"]) == len(body)
    document = json.loads(body[:length])
    assert document["inputs"][0] == {
        "name": "x",
        "shape": [2, 3],
        "datatype": "FP32",
        "parameters": {"binary_data_size": 24},
    }
    assert document["outputs"] == [{"name": "y", "parameters": {"binary_data": True}}]
    assert body[length : length + 24] == TENSORS["x"].tobytes()


def test_grpc_message_is_a_framed_model_infer_request():
    message = grpc_message("m", INPUTS, TENSORS, ["y"])
    assert message[0] == 0 and int.from_bytes(message[1:5], "big") == len(message) - 5
    request = service_pb2.ModelInferRequest.FromString(message[5:])
    assert request.model_name == "m" and [t.name for t in request.inputs] == ["x", "s"]
    assert list(request.inputs[0].shape) == [2, 3] and request.raw_input_contents[0] == TENSORS["x"].tobytes()
    decoded = hpack.Decoder().decode(request_headers("127.0.0.1:8001"))
    assert decoded[:3] == [(":method", "POST"), (":scheme", "http"), (":path", METHOD)]
    assert ("content-type", "application/grpc") in decoded and ("te", "trailers") in decoded


def test_the_output_check_catches_empty_and_misshaped_outputs():
    check_outputs([("y", "FP32", [2, 4], 32)], OUTPUTS, batch=2)
    wrong = {
        "missing": ([("z", "FP32", [2, 4], 32)], "lacks output 'y'"),
        "empty": ([("y", "FP32", [2, 4], 0)], "carries 0 bytes, expected 32"),
        "shape": ([("y", "FP32", [2, 5], 40)], "has shape [2, 5], expected [2, 4]"),
        "datatype": ([("y", "FP16", [2, 4], 16)], "is FP16, the model declares FP32"),
    }
    for found, message in wrong.values():
        with pytest.raises(InferenceError, match=message.replace("[", r"\[").replace("]", r"\]")):
            check_outputs(found, OUTPUTS, batch=2)
    check_outputs([("y", "FP32", [4], 16)], OUTPUTS, batch=None)  # a model without batching
    response = service_pb2.ModelInferResponse(
        outputs=[service_pb2.ModelInferResponse.InferOutputTensor(name="y", datatype="FP32", shape=[1, 4])],
        raw_output_contents=[b""],
    )
    assert grpc_outputs(response.SerializeToString()) == [("y", "FP32", [1, 4], 0)]


def test_windows_agree_is_perf_analyzers_max_over_min_rule():
    assert windows_agree([100, 105, 110], [1.0, 1.05, 1.1], 0.1)
    assert not windows_agree([100, 105, 120], [1.0, 1.0, 1.0], 0.1)
    assert not windows_agree([100, 100, 100], [1.0, 1.2, 1.0], 0.1)
    assert not windows_agree([0, 100, 100], [1.0, 1.0, 1.0], 0.5)


def test_server_times_are_per_request_averages_of_the_diff():
    def stats(count, queue_ns, infer_ns, by_size):
        parts = {p: {"count": count, "ns": 0} for p in ("compute_input", "compute_output")}
        parts.update(
            queue={"count": count, "ns": queue_ns},
            compute_infer={"count": count, "ns": infer_ns},
            success={"count": count, "ns": queue_ns + infer_ns},
        )
        batches = [{"batch_size": size, "compute_infer": {"count": n, "ns": 0}} for size, n in by_size.items()]
        return {
            "inference_stats": parts,
            "batch_stats": batches,
            "execution_count": sum(by_size.values()),
            "inference_count": count + 1,
        }  # the totals may skew between snapshots: not used

    times = server_times(stats(10, 1_000_000, 5_000_000, {1: 10}), stats(110, 51_000_000, 105_000_000, {1: 10, 4: 25}))
    assert times["queue_ms"] == pytest.approx(0.5) and times["compute_infer_ms"] == pytest.approx(1.0)
    assert times["avg_batch_size"] == pytest.approx(4.0) and times["server_ms"] == pytest.approx(1.5)


def test_perf_analyzer_report_becomes_measurement_fields():
    report = parse(
        (FIXTURES / "perf_analyzer_http_c4.csv").read_text(), (FIXTURES / "perf_analyzer_http_c4.txt").read_text()
    )
    figures = report.figures
    assert figures["p50_ms"] == pytest.approx(2.712) and figures["p99_ms"] == pytest.approx(6.684)
    assert figures["mean_ms"] == pytest.approx(2.853) and figures["throughput"] == pytest.approx(1391.66)
    assert figures["queue_ms"] == pytest.approx(1.615) and figures["compute_infer_ms"] == pytest.approx(0.629)
    assert figures["server_ms"] == pytest.approx(2.317)
    assert figures["requests"] == 5084


def test_perf_analyzer_arguments_map_the_spec():
    endpoints = Endpoints("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3")
    args = arguments(
        "m",
        "grpc",
        endpoints,
        Level(concurrency=4),
        2,
        window_s=1.5,
        tolerance=0.15,
        max_windows=6,
        data_file=Path("/d.json"),
        csv_file=Path("/r.csv"),
    )
    assert args[:6] == ["-m", "m", "-u", "127.0.0.1:2", "-i", "grpc"]
    for option in (
        "--concurrency-range=4:4",
        "--measurement-interval=1500",
        "--stability-percentage=15",
        "--max-trials=6",
        "--input-data=/d.json",
        "--verbose-csv",
        "-b2",
    ):
        assert option in args
    rate = arguments(
        "m",
        "http",
        endpoints,
        Level(request_rate=250.5, arrival="poisson"),
        None,
        window_s=1.5,
        tolerance=0.15,
        max_windows=6,
        data_file=Path("/d.json"),
        csv_file=Path("/r.csv"),
    )
    assert "--request-rate-range=250.5" in rate and "--request-distribution=poisson" in rate
    assert f"--max-threads={MAX_IN_FLIGHT}" in rate, "its default of 4 threads caps what is in flight at 4"
    assert not any(a.startswith("--concurrency-range") for a in rate)
