"""Export of a real sweep's pick: the config carries the trial, the python-backend repository
serves in the real server."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import model_config_pb2 as mc

from sweeper.cli import main
from sweeper.triton_config import parse_pbtxt
from tests.repositories import infer_mlp


@pytest.fixture(scope="module")
def study_dir(swept):
    return swept[1]


def test_onnxruntime_export_carries_the_trial(study_dir, tmp_path, capsys):
    out = tmp_path / "repo"
    assert main(["export", str(study_dir), "--out", str(out), "--pick", "min:p50_ms@c1"]) == 0
    printed = capsys.readouterr().out
    record = json.loads((out / "mlp" / "sweeper-export.json").read_text())
    trials = pd.read_csv(study_dir / "trials.csv").set_index("number")
    row = trials.loc[record["trial"]]
    assert row["p50_ms@c1"] == pytest.approx(trials.loc[trials["state"] == "COMPLETE", "p50_ms@c1"].min())
    model = parse_pbtxt((out / "mlp" / "config.pbtxt").read_text())
    assert (model.backend, model.platform) == ("onnxruntime", "onnxruntime_onnx")
    assert model.max_batch_size == row["max_batch_size"]
    assert model.dynamic_batching.max_queue_delay_microseconds == row["max_queue_delay_us"]
    assert model.instance_group[0].count == row["instance_count"]
    assert model.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert (out / "mlp" / "1" / "model.onnx").is_file()
    assert record["parameters"]["protocol"] == row["protocol"] == record["client_protocol"]
    assert (
        record["versions"]["tritonserver"] and record["hardware"]["cpus"] and record["generator"]["name"] == "builtin"
    )
    assert record["measured_backend"] == "python" and record["backend"] == "onnxruntime"
    assert "exported for the onnxruntime backend, which was not measured" in record["backend_note"]
    assert f"clients should use {row['protocol'].upper()}" in printed
    assert not list(out.glob(".mlp.*")), "the export was staged and renamed into place"


def test_python_backend_export_serves_the_source_model(study_dir, tmp_path, local_launcher, mlp_file):
    out = tmp_path / "repo"
    assert main(["export", str(study_dir), "--out", str(out), "--backend", "python"]) == 0
    assert (out / "mlp" / "1" / "model.py").is_file()
    x = np.random.default_rng(7).random((1, 16), dtype=np.float32)
    expected = ort.InferenceSession(str(mlp_file), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    with local_launcher.start(out, tmp_path / "server.log", {}, model_name="mlp") as server:
        produced = infer_mlp(grpcclient, server.endpoints.grpc, x)
    np.testing.assert_allclose(produced, expected, rtol=1e-5, atol=1e-6)


def test_the_export_is_the_served_config_and_can_be_re_ranked(study_dir, tmp_path):
    """--backend python exports the config the trial's server loaded, as it was; --objective
    re-ranks the finished study (one objective: its best trial) without measuring."""
    out = tmp_path / "repo"
    assert (
        main(["export", str(study_dir), "--out", str(out), "--backend", "python", "--objective", "max:throughput@c2"])
        == 0
    )
    record = json.loads((out / "mlp" / "sweeper-export.json").read_text())
    trials = pd.read_csv(study_dir / "trials.csv")
    assert record["trial"] == int(trials.loc[trials["throughput@c2"].idxmax(), "number"])
    assert record["ranked_by"]["objectives"] == [{"column": "throughput@c2", "direction": "maximize"}]
    assert record["backend_note"] is None, "exported with the backend that was measured"
    served = (study_dir / "trials" / str(record["trial"]) / "config.pbtxt").read_text()
    assert (out / "mlp" / "config.pbtxt").read_text() == served


def test_exporting_again_replaces_the_model_whole(study_dir, tmp_path):
    out = tmp_path / "repo"
    assert main(["export", str(study_dir), "--out", str(out), "--backend", "python"]) == 0
    assert main(["export", str(study_dir), "--out", str(out)]) == 0
    assert not (out / "mlp" / "1" / "model.py").exists(), "no file of the previous export is left"


def test_pick_trial_and_where(study_dir, tmp_path, capsys):
    assert main(["export", str(study_dir), "--out", str(tmp_path / "a"), "--pick", "trial", "1"]) == 0
    assert json.loads((tmp_path / "a" / "mlp" / "sweeper-export.json").read_text())["trial"] == 1
    status = main(["export", str(study_dir), "--out", str(tmp_path / "b"), "--where", "p50_ms@c1 <= 0.000001"])
    err = capsys.readouterr().err
    assert status == 2 and "no feasible trial meets p50_ms@c1 <= 0.000001" in err and "closest: trial" in err
    assert not (tmp_path / "b").exists()
    assert main(["export", str(study_dir), "--out", str(tmp_path / "c"), "--where", "p51_ms@c1 <= 3"]) == 2
    assert "no column 'p51_ms@c1'" in capsys.readouterr().err
    assert main(["export", str(study_dir), "--out", str(tmp_path / "d"), "--pick", "best"]) == 2


def test_export_and_report_onto_a_file_are_refused(study_dir, tmp_path, capsys):
    target = tmp_path / "a-file"
    target.write_text("mine")
    for command in ("export", "report"):
        assert main([command, str(study_dir), "--out", str(target)]) == 2
        err = capsys.readouterr().err
        assert f"--out {target}: is a file, not a folder" in err and "Traceback" not in err
    assert target.read_text() == "mine"
