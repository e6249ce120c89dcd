"""Model folders of several kinds swept on the real server, their tables, and exports that load
in the real server and answer."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tritonclient.http as httpclient

from sweeper.cli import main
from sweeper.triton_config import parse_pbtxt
from tests.conftest import write_spec
from tests.repositories import (
    add_sub_repository,
    int8_onnx_repository,
    string_python_repository,
    unbatched_python_repository,
)

SPEC = """
study: {name: NAME, trials: TRIALS, sampler: grid, confirm_repeats: 0}
model:
DATA  source: {repository: FOLDER}
SPACE
load: {generator: GENERATOR, concurrency: [1, 2], warmup_s: 0.1, window_s: 0.2, stability_tolerance: 1.0, max_windows: 3}
objectives:
  - {metric: p50_ms, concurrency: 1, direction: minimize}
  - {metric: throughput, concurrency: 2, direction: maximize}
"""


def _sweep(tmp_path, name, folder, space, *, trials, data=None, generator="builtin"):
    body = (
        SPEC.replace("NAME", name)
        .replace("FOLDER", str(folder))
        .replace("SPACE", space)
        .replace("TRIALS", str(trials))
        .replace("GENERATOR", generator)
        .replace("DATA", f"  input_data: {data}\n" if data else "")
    )
    spec = write_spec(tmp_path, body, f"{name}.yaml")
    assert main(["run", str(spec), "--results-dir", str(tmp_path / "results")]) == 0
    directory = tmp_path / "results" / name
    trials_table = pd.read_csv(directory / "trials.csv", dtype={"max_queue_delay_us": str})
    assert (trials_table["state"] == "COMPLETE").all(), trials_table["failure"].tolist()
    return directory, trials_table


def _export_and_ask(tmp_path, directory, local_launcher, model, request, *extra):
    out = tmp_path / f"export-{model}"
    assert main(["export", str(directory), "--out", str(out), *extra]) == 0
    client_inputs = []
    with local_launcher.start(out, tmp_path / f"{model}.log", {}, model_name=model) as server:
        client = httpclient.InferenceServerClient(server.endpoints.http)
        try:
            for name, array, datatype in request:
                tensor = httpclient.InferInput(name, list(array.shape), datatype)
                tensor.set_data_from_numpy(array)
                client_inputs.append(tensor)
            return client.infer(model, client_inputs), out / model
        finally:
            client.close()


def test_an_onnx_folder_with_int32_inputs_and_two_outputs(tmp_path, local_launcher):
    folder = add_sub_repository(tmp_path / "models")
    directory, trials = _sweep(
        tmp_path,
        "add_sub",
        folder,
        "search_space:\n  instance_count: [1, 2]\n  protocol: [http, grpc]",
        trials=4,
        generator="perf_analyzer",
    )
    assert set(trials["max_batch_size"]) == {8} and set(trials["max_queue_delay_us"]) == {"100"}, (
        "kept knobs are recorded"
    )
    assert set(trials["precision"]) == {"native"} and trials.loc[0, "baseline"]
    served = parse_pbtxt((directory / "trials" / "0" / "config.pbtxt").read_text())
    assert served.parameters["intra_op_thread_count"].string_value == "1", "the folder's own fields are kept"
    assert list(served.dynamic_batching.preferred_batch_size) == [4]
    # The original export keeps the folder's platform and fields: ready for a server with onnxruntime.
    assert main(["export", str(directory), "--out", str(tmp_path / "original")]) == 0
    original = parse_pbtxt((tmp_path / "original" / "add_sub" / "config.pbtxt").read_text())
    assert original.platform == "onnxruntime_onnx" and not original.backend
    assert original.parameters["intra_op_thread_count"].string_value == "1"
    assert original.version_policy.latest.num_versions == 1
    a = np.array([[1, 2, 3, 4]], np.int32)
    b = np.array([[10, 20, 30, 40]], np.int32)
    result, _ = _export_and_ask(
        tmp_path, directory, local_launcher, "add_sub", [("a", a, "INT32"), ("b", b, "INT32")], "--backend", "python"
    )
    np.testing.assert_array_equal(result.as_numpy("sum"), a + b)
    np.testing.assert_array_equal(result.as_numpy("difference"), a - b)


def test_a_space_that_leaves_out_the_folders_own_config_measures_it_first(tmp_path, capsys):
    """As a newcomer explores: the folder's own delay (100 us) and instance count (1) are not in
    the space; they join it, trial 0 serves them, and the run says so."""
    folder = add_sub_repository(tmp_path / "models")
    directory, trials = _sweep(
        tmp_path, "add_sub", folder, "search_space:\n  max_queue_delay_us: [0, 500]\n  instance_count: [2]", trials=2
    )
    printed = capsys.readouterr().out
    assert "the baseline's own values join the search space (max_queue_delay_us 100, instance_count 1)" in printed
    first = trials.set_index("number").loc[0]
    assert first["baseline"] and first["max_queue_delay_us"] == "100" and first["instance_count"] == 1
    served = parse_pbtxt((directory / "trials" / "0" / "config.pbtxt").read_text())
    assert served.dynamic_batching.max_queue_delay_microseconds == 100 and served.instance_group[0].count == 1


FIELDS_SPACE = """search_space:
  max_queue_delay_us: [100]
  config:
    dynamic_batching.preferred_batch_size: [[2, 4]]
    parameters.intra_op_thread_count: ["2"]
  server:
    --pinned-memory-pool-byte-size: [1048576]
server: {reuse: reload}"""


@pytest.mark.slow
def test_config_fields_and_a_server_option_reach_the_served_config_the_server_and_the_export(
    tmp_path, local_launcher, capsys
):
    """Fields no named knob covers, each beside the folder's own value (preferred sizes [4],
    one thread) or Triton's default (no option): every combination is served as its row says,
    a changed option restarts the reload server, and the export carries both."""
    folder = add_sub_repository(tmp_path / "models")
    directory, trials = _sweep(tmp_path, "add_sub", folder, FIELDS_SPACE, trials=8)
    assert "the baseline's own values join the search space" in capsys.readouterr().out
    sizes, threads, pinned = (
        "config.dynamic_batching.preferred_batch_size",
        "config.parameters.intra_op_thread_count",
        "server.pinned-memory-pool-byte-size",
    )
    trials = pd.read_csv(directory / "trials.csv", dtype={threads: str, pinned: str})  # as written: 2, not 2.0
    combos = {(r[sizes], r[threads], str(r[pinned])) for _, r in trials.iterrows()}
    assert combos == {(s, t, p) for s in ("[2, 4]", "[4]") for t in ("1", "2") for p in ("1048576", "nan")}
    for _, row in trials.iterrows():
        served = parse_pbtxt((directory / "trials" / str(row["number"]) / "config.pbtxt").read_text())
        assert list(served.dynamic_batching.preferred_batch_size) == json.loads(row[sizes])
        assert served.parameters["intra_op_thread_count"].string_value == row[threads]
        assert served.dynamic_batching.max_queue_delay_microseconds == 100
    logs = [log.read_text() for log in sorted((directory / "reload").glob("server-*.log"))]
    pools = {
        line.split("|")[2].strip() for log in logs for line in log.splitlines() if "pinned_memory_pool_byte" in line
    }
    assert pools == {"1048576", "268435456"}, "each option value had a server of its own (Triton's default 256 MiB)"
    assert len(logs) >= 2
    chosen = trials[(trials[sizes] == "[2, 4]") & (trials[threads] == "2") & (trials[pinned] == "1048576")]
    number = int(chosen["number"].iloc[0])
    a, b = np.arange(4, dtype=np.int32).reshape(1, 4), np.ones((1, 4), np.int32)
    result, exported = _export_and_ask(
        tmp_path,
        directory,
        local_launcher,
        "add_sub",
        [("a", a, "INT32"), ("b", b, "INT32")],
        "--pick",
        f"trial {number}",
        "--backend",
        "python",
    )
    np.testing.assert_array_equal(result.as_numpy("sum"), a + b)
    config = parse_pbtxt((exported / "config.pbtxt").read_text())
    assert list(config.dynamic_batching.preferred_batch_size) == [2, 4]
    assert config.parameters["intra_op_thread_count"].string_value == "2"
    record = json.loads((exported / "sweeper-export.json").read_text())
    assert record["server_options"] == ["--pinned-memory-pool-byte-size=1048576"]
    assert record["parameters"][sizes] == "[2, 4]"
    assert "preferred_batch_size=[2, 4]" in (directory / "report.html").read_text()


@pytest.mark.slow
def test_a_python_model_without_batching(tmp_path, local_launcher):
    """Its own instance count (1) is left out of the space: it joins, as the baseline."""
    folder = unbatched_python_repository(tmp_path / "models")
    directory, trials = _sweep(
        tmp_path, "doubler", folder, "search_space:\n  instance_count: [2]\n  protocol: [grpc]", trials=2
    )
    assert set(trials["max_batch_size"]) == {0} and set(trials["max_queue_delay_us"]) == {"off"}
    assert sorted(zip(trials["instance_count"], trials["protocol"])) == [(1, "grpc"), (2, "grpc")]
    x = np.arange(16, dtype=np.float32)
    result, exported = _export_and_ask(tmp_path, directory, local_launcher, "doubler", [("x", x, "FP32")])
    np.testing.assert_allclose(result.as_numpy("y"), 2 * x)
    assert (exported / "1" / "model.py").read_text() == (folder / "1" / "model.py").read_text()
    assert json.loads((exported / "sweeper-export.json").read_text())["backend"] == "python"


@pytest.mark.parametrize("generator", ["builtin", "perf_analyzer"])
def test_a_string_input_fed_from_request_data(tmp_path, local_launcher, generator):
    folder, data = string_python_repository(tmp_path / "models")
    directory, trials = _sweep(
        tmp_path,
        "lengths",
        folder,
        "search_space:\n  max_queue_delay_us: [off]",  # its own 0 joins
        trials=2,
        data=data,
        generator=generator,
    )
    assert set(trials["generator"]) == {generator}
    text = np.array([[b"four", b"three"]], dtype=object)
    result, _ = _export_and_ask(tmp_path, directory, local_launcher, "lengths", [("text", text, "BYTES")])
    np.testing.assert_array_equal(result.as_numpy("lengths"), [[4, 5]])


def test_an_int8_onnx_model_served_as_it_is(tmp_path, local_launcher):
    folder = int8_onnx_repository(tmp_path / "models")
    directory, trials = _sweep(
        tmp_path, "mlp_int8", folder, "search_space:\n  max_queue_delay_us: [off, 0]\n  protocol: [grpc]", trials=2
    )
    assert set(trials["precision"]) == {"native"} and (directory / "models" / "native" / "model.onnx").is_file()
    x = np.ones((1, 16), np.float32)
    result, _ = _export_and_ask(
        tmp_path, directory, local_launcher, "mlp_int8", [("x", x, "FP32")], "--backend", "python"
    )
    assert result.as_numpy("y").shape == (1, 4)
