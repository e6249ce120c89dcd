"""`sweeper run` end to end on the real server: tables, resume, failures, accuracy, batching
states, reload mode, shared studies."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest

from sweeper.cli import main
from tests.conftest import FAST_LOAD, fixed_batch_onnx, unloadable_onnx, write_spec
from tests.integration.conftest import E2E_SPEC as SPEC


def test_run_writes_the_three_tables(swept):
    _, directory = swept
    trials = pd.read_csv(directory / "trials.csv")
    assert list(trials.columns[:8]) == [
        "number",
        "state",
        "baseline",
        "max_batch_size",
        "max_queue_delay_us",
        "instance_count",
        "protocol",
        "precision",
    ]
    for column in (
        "p50_ms@c1",
        "throughput@c2",
        "max_abs_error",
        "cosine_similarity",
        "build_s",
        "start_s",
        "measure_s",
        "stop_s",
        "reuse",
        "generator",
        "failure",
    ):
        assert column in trials.columns
    assert len(trials) == 3 and (trials["state"] == "COMPLETE").all()
    assert trials.loc[0, "baseline"] and trials.loc[0, "max_batch_size"] == 8 and trials.loc[0, "protocol"] == "http"
    assert (trials["start_s"] > 0).all() and (trials["measure_s"] > 0).all() and (trials["stop_s"] > 0).all()
    assert set(trials["reuse"]) == {"restart"}

    measurements = pd.read_csv(directory / "measurements.csv")
    first = measurements[measurements["repeat_of"].isna()]  # the spec confirms: repeats are rows too
    assert len(first) == 6 and sorted(measurements["concurrency"].unique()) == [1, 2]
    repeated = measurements[measurements["repeat_of"].notna()]
    assert len(repeated) >= 2 and set(repeated["repeat_of"]) <= set(first["number"])
    assert set(measurements["generator"]) == {"builtin"}
    batched = measurements[(measurements["number"] == 0) & (measurements["concurrency"] == 1)].iloc[0]
    assert batched["queue_ms"] > 15, "a 20 ms delay with batching on holds requests in the queue"

    pareto = pd.read_csv(directory / "pareto.csv")
    assert list(pareto.columns) == list(trials.columns) and pareto["feasible"].all()
    for name in ("config.pbtxt", "server.log"):
        assert (directory / "trials" / "0" / name).is_file()
    assert (directory / "samples.npz").is_file() and (directory / "models" / "fp32" / "model.onnx").is_file()


def test_the_study_holds_typed_records_and_optunas_own_names(swept):
    from sweeper.record import SCHEMA_VERSION, read_study
    from sweeper.storage import open_stored_study

    _, directory = swept
    study = open_stored_study(directory)
    assert study.metric_names == ["p50_ms@c1", "throughput@c2"], "optuna-dashboard shows objectives by name"
    record = read_study(study)
    assert record.schema == SCHEMA_VERSION and record.ranking.constraints[0].label == "p99_ms@c1<=5000"
    trial = record.trial(0)
    assert trial.baseline and trial.kind == "complete" and trial.reuse == "restart"
    assert "max_queue_delay_microseconds: 20000" in trial.served_config
    assert trial.served_config == (directory / "trials" / "0" / "config.pbtxt").read_text()
    assert trial.generator.name == "builtin" and trial.generator.version
    assert trial.machine["cpus"] >= 1 and trial.machine["cpu"]
    assert [m.concurrency for m in trial.measurements] == [1, 2] and trial.timings.measure_s > 0
    frozen = study.trials[0]
    named = {k: v for k, v in frozen.constraints.items() if not k.isdigit()}  # Optuna also lists the unnamed ones
    assert set(named) == {"cosine_similarity", "p99_ms@c1<=5000"} == set(trial.constraints)
    assert frozen.system_attrs["constraints"] == list(named.values()), "the list optuna-dashboard reads"


SIZING_SPEC = (
    """
study: {name: sizing, trials: 2, sampler: grid, confirm_repeats: 0}
model: {name: mlp, source: {onnx: MODEL}}
search_space: {max_batch_size: [8], max_queue_delay_us: [0], instance_count: [1, 2], protocol: [http], precision: [fp32]}
objectives:
  - {metric: capacity, percentile: p99_ms, budget_ms: 200, direction: maximize}
  - {metric: server_memory_mb, direction: minimize}
constraints:
  - {metric: server_memory_mb, max: 4000}
  - {metric: capacity, percentile: p50_ms, budget_ms: 0.001, min: 0}
"""
    + FAST_LOAD
    + """
  capacity: {low: 1, high: 4}
"""
)


def test_capacity_and_server_memory_size_a_front_a_report_and_an_export(tmp_path, mlp_file):
    """Capacity within a budget and memory as the objectives; a budget no load meets is a
    result (capacity 0, the reason), not a failure."""
    spec = write_spec(tmp_path, SIZING_SPEC.replace("MODEL", str(mlp_file)))
    assert main(["run", str(spec), "--results-dir", str(tmp_path / "results")]) == 0
    folder = tmp_path / "results" / "sizing"
    trials = pd.read_csv(folder / "trials.csv").set_index("instance_count")
    assert (trials["state"] == "COMPLETE").all() and trials["feasible"].all()
    one, two = trials.loc[1, "server_memory_mb"], trials.loc[2, "server_memory_mb"]
    assert 20 < one < two < 4000, "a second python-backend instance is a second stub process"
    assert trials["gpu_memory_mb"].isna().all(), "no GPU here: nothing reported, not zero"
    capacity = "capacity@p99_ms<=200"
    assert (trials[f"{capacity}:load"] == 4).all(), "200 ms holds up to the search's upper bound"
    assert trials[f"{capacity}:note"].str.contains("at least this").all()
    assert (trials[capacity] > 0).all()
    never = "capacity@p50_ms<=0.001"
    assert (trials[never] == 0).all() and (trials[f"{never}:load"] == 0).all()
    assert trials[f"{never}:note"].str.contains("over the budget of 0.001 ms: no load tried meets it").all()
    rows = pd.read_csv(folder / "measurements.csv")
    searched = rows[rows["search"] == capacity]
    assert set(searched["level"]) == {"c2", "c4"}, "c1 is a listed level; the search measured 2 and 4 besides"
    assert set(rows[rows["search"].isna()]["level"]) == {"c1"}
    pareto = pd.read_csv(folder / "pareto.csv")
    assert {capacity, "server_memory_mb"} <= set(pareto.columns) and not pareto.empty
    assert main(["report", str(folder)]) == 0
    assert "Capacity and memory" in (folder / "report.html").read_text()
    assert capacity in (folder / "summary.md").read_text()
    out = tmp_path / "export"
    assert main(["export", str(folder), "--out", str(out), "--pick", "min:server_memory_mb"]) == 0
    record = json.loads((out / "mlp" / "sweeper-export.json").read_text())
    assert record["parameters"]["instance_count"] == 1 and record["metrics"]["server_memory_mb"] == pytest.approx(one)
    assert record["metrics"][capacity] == pytest.approx(trials.loc[1, capacity])
    assert {c["column"] for c in record["capacity"]} == {capacity, never}


NEIGHBOURS_SPEC = (
    """
study: {name: near, trials: 4, sampler: random, seed: 0, confirm_repeats: 0, neighbours: 2}
model:
  name: mlp
  source: {onnx: MODEL}
search_space:
  max_batch_size: [1, 4, 8]
  max_queue_delay_us: [0]
  instance_count: [1]
  protocol: [http, grpc]
  precision: [fp32]
baseline: {max_batch_size: 8, max_queue_delay_us: 0, instance_count: 1, protocol: http}
objectives:
  - {metric: p50_ms, concurrency: 1, direction: minimize}
"""
    + FAST_LOAD
)


def test_the_last_trials_measure_the_front_trials_neighbours(tmp_path, mlp_file, capsys):
    """Of 4 trials, the last 2 measure untried neighbours of the knee (or, with none left, of the
    next front trial), each one knob of the trial it names moved: max_batch_size, a knob of
    numbers, one step along its list (8 -> 4, not 1); once none is left, the sampler proposes."""
    spec = write_spec(tmp_path, NEIGHBOURS_SPEC.replace("MODEL", str(mlp_file)))
    assert main(["run", str(spec), "--results-dir", str(tmp_path / "results")]) == 0
    assert "(a neighbour of trial " in capsys.readouterr().out
    trials = pd.read_csv(tmp_path / "results" / "near" / "trials.csv").set_index("number")
    assert len(trials) == 4 and (trials["state"] == "COMPLETE").all()
    assert trials["neighbour_of"].iloc[:2].isna().all() and trials["neighbour_of"].iloc[2:].notna().any()
    sizes = [1, 4, 8]
    for number, row in trials[trials["neighbour_of"].notna()].iterrows():
        origin = trials.loc[int(row["neighbour_of"])]
        assert int(row["neighbour_of"]) < number
        moved = [k for k in ("max_batch_size", "protocol") if row[k] != origin[k]]
        assert len(moved) == 1, (row, origin)
        if moved == ["max_batch_size"]:
            assert abs(sizes.index(row["max_batch_size"]) - sizes.index(origin["max_batch_size"])) == 1


def _snapshot(folder):
    """Every file under ``folder`` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "change, words",
    [
        (
            (
                "- {metric: p50_ms, concurrency: 1, direction: minimize}",
                "- {metric: p99_ms, concurrency: 1, direction: minimize}",
            ),
            "the stored study 'e2e' does not match: it optimizes p50_ms@c1, throughput@c2",
        ),
        (("direction: maximize", "direction: minimize"), "its directions are minimize, maximize"),
        (("model:", "server: {backend: onnxruntime}\nmodel:"), "server.backend: onnxruntime is not among the backends"),
        (("study: {", "study: {storage: 'nosuchdb://x', "), "unknown database kind 'nosuchdb'"),
    ],
)
def test_a_refused_rerun_leaves_the_study_folder_byte_for_byte(swept, tmp_path, capsys, change, words):
    import shutil

    spec, original = swept
    results = tmp_path / "results"
    shutil.copytree(original, results / "e2e", symlinks=True)
    changed = spec.read_text().replace(*change)
    assert changed != spec.read_text()
    refused = tmp_path / "spec.yaml"
    refused.write_text(changed)
    before = _snapshot(results)
    assert main(["run", str(refused), "--results-dir", str(results)]) == 2
    assert words in capsys.readouterr().err
    after = _snapshot(results)
    assert after.keys() == before.keys() and all(after[k] == before[k] for k in before), "nothing on disk changed"


def test_a_finished_study_is_re_ranked_without_starting_a_server(swept, tmp_path):
    """`sweeper report --objective/--constraint` in a process of its own: it ranks by p99 at
    concurrency 2 and a throughput floor, writes elsewhere, and never imports what starts servers."""
    _, directory = swept
    out = tmp_path / "reranked"
    probe = (
        "import sys; from sweeper.cli import main; "
        f"status = main(['report', {str(directory)!r}, '--out', {str(out)!r}, "
        "'--objective', 'min:p99_ms@c2', '--constraint', 'throughput@c1 >= 1']); "
        "loaded = [m for m in sys.modules if m.split('.')[0] == 'docker' or m.startswith(('sweeper.launchers', "
        "'sweeper.load', 'sweeper.study', 'sweeper.sweep'))]; "
        "print(json.dumps({'status': status, 'loaded': loaded}))"
    )
    done = subprocess.run([sys.executable, "-c", "import json; " + probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"status": 0, "loaded": []}, "no launcher, load generator or study runtime was imported"
    pareto = pd.read_csv(out / "pareto.csv")
    trials = pd.read_csv(out / "trials.csv")
    assert "p99_ms@c2" in trials.columns and "p50_ms@c1" not in trials.columns
    assert list(pareto["number"]) == [int(trials.loc[trials["p99_ms@c2"].idxmin(), "number"])]
    assert "re-ranked from the stored measurements" in (out / "summary.md").read_text()
    assert "min p99_ms@c2; feasible when throughput@c1&gt;=1" in (out / "report.html").read_text()
    own = pd.read_csv(directory / "trials.csv")
    assert "p50_ms@c1" in own.columns, "the study's own tables are untouched"


def test_rerun_resumes_the_study(swept, capsys, tmp_path):
    import shutil

    spec, original = swept
    directory = tmp_path / "e2e"
    shutil.copytree(original, directory, ignore=shutil.ignore_patterns("trials", "backends"), symlinks=True)
    assert main(["run", str(spec), "--results-dir", str(tmp_path), "--trials", "4"]) == 0
    trials = pd.read_csv(directory / "trials.csv")
    assert len(trials) == 4 and list(trials["number"])[:3] == [0, 1, 2], "the confirmation repeats came between"
    assert trials["baseline"].sum() == 1
    assert "Pareto front of 'e2e'" in capsys.readouterr().out


def test_a_finished_study_says_so_on_a_rerun(swept, capsys, tmp_path):
    import shutil

    spec, original = swept
    shutil.copytree(original, tmp_path / "e2e", ignore=shutil.ignore_patterns("trials", "backends"), symlinks=True)
    assert main(["run", str(spec), "--results-dir", str(tmp_path), "--no-report"]) == 0
    out = capsys.readouterr().out
    assert "study 'e2e' is finished: 3 of 3 trials measured; nothing to run" in out
    assert "0/3" not in out and not (tmp_path / "e2e" / "trials").exists(), "no trial ran"


def test_failed_trial_is_recorded_with_its_reason_and_the_study_goes_on(tmp_path):
    """A model exported without a dynamic batch axis fails once the batcher groups requests."""
    model = fixed_batch_onnx(tmp_path / "fixed.onnx")
    body = SPEC.replace("MODEL", str(model)).replace("name: e2e, trials: 3", "name: fails, trials: 2")
    body = body.replace("protocol: [http, grpc]", "protocol: [grpc]").replace("protocol: http}", "protocol: grpc}")
    spec = write_spec(tmp_path, body)
    assert main(["run", str(spec), "--results-dir", str(tmp_path / "results")]) == 0
    trials = pd.read_csv(tmp_path / "results" / "fails" / "trials.csv").set_index("max_batch_size")
    assert trials.loc[8, "state"] == "FAIL"
    assert "inference failed at concurrency 2" in trials.loc[8, "failure"]
    assert trials.loc[1, "state"] == "COMPLETE" and pd.isna(trials.loc[1, "failure"])


def test_a_precision_outside_the_accuracy_guard_is_measured_once_and_leaves_the_space(tmp_path, mlp_file, capsys):
    body = SPEC.replace("MODEL", str(mlp_file)).replace("name: e2e, trials: 3", "name: acc, trials: 4")
    body = body.replace("precision: [fp32]", "precision: [fp32, int8]").replace("sampler: grid, ", "")
    body = body.replace("max_batch_size: [1, 8]", "max_batch_size: [8]").replace(
        "confirm_repeats: 1", "confirm_repeats: 0"
    )
    body += "accuracy: {min_cosine_similarity: 0.999999999}\n"
    spec = write_spec(tmp_path, body)
    assert main(["run", str(spec), "--results-dir", str(tmp_path / "results")]) == 0
    assert "precision int8 leaves the search space" in capsys.readouterr().out
    trials = pd.read_csv(tmp_path / "results" / "acc" / "trials.csv")
    int8 = trials[trials["precision"] == "int8"]
    assert len(int8) == 1, "the other int8 configuration (the other protocol) is neither built nor measured"
    assert int8["state"].iloc[0] == "COMPLETE" and not int8["feasible"].iloc[0]
    assert "int8 cosine similarity" in int8["infeasible"].iloc[0]
    assert len(trials) == 3, "the space is exhausted: 2 fp32 configurations and the one int8 verdict"
    assert set(pd.read_csv(tmp_path / "results" / "acc" / "pareto.csv")["precision"]) == {"fp32"}


def test_top1_agreement_guards_int8_beside_cosine_and_the_export_records_the_rules(tmp_path, mlp_file):
    """The MLP's 4 outputs as scores: each precision's top-1 agreement is measured, held to
    accuracy.min_top1_agreement, and the export records the rules its pick passed."""
    body = SPEC.replace("MODEL", str(mlp_file)).replace("name: e2e, trials: 3", "name: top1, trials: 2")
    body = body.replace("precision: [fp32]", "precision: [fp32, int8]").replace(
        "protocol: [http, grpc]", "protocol: [http]"
    )
    body = body.replace("max_batch_size: [1, 8]", "max_batch_size: [8]").replace(
        "confirm_repeats: 1", "confirm_repeats: 0"
    )
    body += "accuracy: {min_cosine_similarity: 0.9, min_top1_agreement: 1.0}\n"
    spec = write_spec(tmp_path, body)
    assert main(["run", str(spec), "--results-dir", str(tmp_path / "results")]) == 0
    folder = tmp_path / "results" / "top1"
    trials = pd.read_csv(folder / "trials.csv").set_index("precision")
    assert trials.loc["fp32", "top1_agreement"] == 1.0
    int8 = trials.loc["int8"]
    assert 0 <= int8["top1_agreement"] <= 1 and int8["cosine_similarity"] > 0.9
    if int8["top1_agreement"] < 1:  # this CPU's INT8 moved a pick: the guard says so
        assert not int8["feasible"] and "int8 top-1 agreement" in int8["infeasible"]
    else:
        assert int8["feasible"]
    trial = str(int(trials.loc["fp32", "number"]))
    assert main(["export", str(folder), "--out", str(tmp_path / "deploy"), "--pick", "trial", trial]) == 0
    record = json.loads((tmp_path / "deploy" / "mlp" / "sweeper-export.json").read_text())
    assert record["accuracy"]["top1_agreement"] == 1.0
    assert record["accuracy"]["rules"] == [
        "cosine_similarity 1 >= 0.9 (accuracy.min_cosine_similarity)",
        "top1_agreement 1 >= 1.0 (accuracy.min_top1_agreement)",
    ]


def test_a_model_whose_first_trials_all_fail_to_load_alike_stops_with_exit_1(tmp_path, capsys):
    body = SPEC.replace("MODEL", str(unloadable_onnx(tmp_path / "broken.onnx")))
    body = body.replace("name: e2e, trials: 3", "name: broken, trials: 4")
    body = body.replace(
        "baseline: {max_batch_size: 8, max_queue_delay_us: 20000, instance_count: 1, protocol: http}\n", ""
    )
    spec = write_spec(tmp_path, body)
    assert main(["run", str(spec), "--results-dir", str(tmp_path / "results")]) == 1
    err = capsys.readouterr().err
    assert "the first 3 trials all failed alike (loading), so the sweep stops" in err and "NoSuchOperator" in err
    trials = pd.read_csv(tmp_path / "results" / "broken" / "trials.csv")
    assert len(trials) == 3 and (trials["state"] == "FAIL").all(), "the fourth configuration is not paid for"


BATCHING = """
study: {name: batching, trials: 3, sampler: grid, confirm_repeats: 0}
model: {name: mlp, source: {onnx: MODEL}}
search_space:
  max_batch_size: [8]
  max_queue_delay_us: [off, 0, 100]
  protocol: [grpc]
baseline: {config_pbtxt: config.pbtxt, protocol: grpc}
load: {generator: GENERATOR, concurrency: [1, 6], warmup_s: 0.1, window_s: 0.25, stability_tolerance: 1.0, max_windows: 3}
objectives:
  - {metric: p50_ms, concurrency: 1, direction: minimize}
  - {metric: throughput, concurrency: 6, direction: maximize}
"""


def test_off_zero_and_a_delay_are_three_server_behaviours(tmp_path, mlp_file):
    """The team's config.pbtxt has `dynamic_batching { }`: trial 0 batches, as they run it. With
    perf_analyzer, the default; that both generators see batching is the load family's shared
    test (tests/integration/test_load.py)."""
    generator = "perf_analyzer"
    (tmp_path / "config.pbtxt").write_text(
        'name: "mlp"\nmax_batch_size: 8\ndynamic_batching { }\ninstance_group [{ count: 1 kind: KIND_CPU }]\n'
    )
    spec = write_spec(tmp_path, BATCHING.replace("MODEL", str(mlp_file)).replace("GENERATOR", generator))
    assert main(["run", str(spec), "--results-dir", str(tmp_path / "results")]) == 0
    directory = tmp_path / "results" / "batching"
    trials = pd.read_csv(directory / "trials.csv", dtype={"max_queue_delay_us": str}).set_index("number")
    assert trials.loc[0, "baseline"] and trials.loc[0, "max_queue_delay_us"] == "0"
    assert sorted(trials["max_queue_delay_us"]) == ["0", "100", "off"]
    assert "dynamic_batching {\n}" in (directory / "trials" / "0" / "config.pbtxt").read_text()
    measurements = pd.read_csv(directory / "measurements.csv").set_index(["number", "concurrency"])
    by_delay = {trials.loc[n, "max_queue_delay_us"]: measurements.loc[(n, 6), "avg_batch_size"] for n in trials.index}
    assert by_delay["off"] == pytest.approx(1.0)
    assert by_delay["0"] > 1.2 and by_delay["100"] > 1.2
    assert set(measurements["generator"]) == {generator}
    summary, page = (directory / "summary.md").read_text(), (directory / "report.html").read_text()
    assert "delay=0us" in summary and "## Batching" in summary
    assert "delay=off" in page and "delay=0us" in page and "delay=100us" in page
    off_number = int(trials.index[trials["max_queue_delay_us"] == "off"][0])
    assert main(["export", str(directory), "--out", str(tmp_path / "off"), "--pick", "trial", str(off_number)]) == 0
    assert "dynamic_batching" not in (tmp_path / "off" / "mlp" / "config.pbtxt").read_text()
    assert main(["export", str(directory), "--out", str(tmp_path / "zero"), "--pick", "trial", "0"]) == 0
    exported = (tmp_path / "zero" / "mlp" / "config.pbtxt").read_text()
    assert "dynamic_batching {\n}" in exported
    record = json.loads((tmp_path / "zero" / "mlp" / "sweeper-export.json").read_text())
    assert record["parameters"]["max_queue_delay_us"] == 0 and record["generator"]["name"] == generator


# Open-loop load and a capacity over rates: reload mode measures them too.
RELOAD_LOAD = """load:
  generator: builtin
  mode: request_rate
  request_rates: [50]
  capacity: {low: 50, high: 100, resolution: 50}
  warmup_s: 0.1
  window_s: 0.2
  stability_tolerance: 1.0
  max_windows: 3
objectives:
  - {metric: p50_ms, request_rate: 50, direction: minimize}
constraints:
  - {metric: capacity, percentile: p99_ms, budget_ms: 5000, min: 0}
"""
RELOAD = (
    """
study: {name: reload, trials: 5, sampler: grid, confirm_repeats: 0}
model: {name: mlp, source: {onnx: MODEL}}
server: SERVER
search_space:
  max_batch_size: [1, 8]
  max_queue_delay_us: [off, 0]
  protocol: [http]
  precision: [fp32, int8]
baseline: {max_batch_size: 8, max_queue_delay_us: 0, instance_count: 1, protocol: http}
"""
    + RELOAD_LOAD
)


def test_reload_mode_serves_every_trial_from_one_server(tmp_path, mlp_file):
    """On the local launcher: loading and unloading on each launcher is the launcher family's
    shared test (tests/integration/test_launchers.py), a whole sweep in containers test_docker's."""
    server = {"reuse": "reload"}
    spec = write_spec(tmp_path, RELOAD.replace("MODEL", str(mlp_file)).replace("SERVER", json.dumps(server)))
    assert main(["run", str(spec), "--results-dir", str(tmp_path / "results")]) == 0
    directory = tmp_path / "results" / "reload"
    trials = pd.read_csv(directory / "trials.csv", dtype={"max_queue_delay_us": str})
    assert len(trials) == 5 and (trials["state"] == "COMPLETE").all() and set(trials["reuse"]) == {"reload"}
    assert {"fp32", "int8"} == set(trials["precision"]), "a precision change brings its model file"
    assert len(list((directory / "reload").glob("server-*.log"))) == 1, "one server for the study"
    assert (trials["capacity@p99_ms<=5000:load"] == 100).all(), "open-loop capacity, up to the search's bound"
    levels = pd.read_csv(directory / "measurements.csv").groupby("number")["level"].apply(set)
    assert all(found == {"r50", "r100"} for found in levels), "the listed rate and the one the search tried"
    assert trials["start_s"].max() < 10 and trials["stop_s"].max() < 2
    for number in trials["number"]:
        assert f"mlp__t{number}" in (directory / "trials" / str(number) / "server.log").read_text()


def test_reload_mode_restarts_after_a_failed_load(tmp_path, mlp_file):
    """One precision cannot be served (its model fails to load); the next trial gets a fresh server."""
    broken = fixed_batch_onnx(tmp_path / "fixed.onnx")
    body = RELOAD.replace("MODEL", str(broken)).replace("SERVER", "{reuse: reload}").replace("trials: 5", "trials: 3")
    body = body.replace("max_batch_size: [1, 8]", "max_batch_size: [1, 8]\n  instance_count: [1]")
    spec = write_spec(
        tmp_path,
        body.replace("precision: [fp32, int8]", "precision: [fp32]")
        .replace("max_queue_delay_us: [off, 0]", "max_queue_delay_us: [0]")
        .replace(RELOAD_LOAD, FAST_LOAD.replace("concurrency: [1]", "concurrency: [2]").lstrip())
        + "objectives:\n  - {metric: p50_ms, concurrency: 2, direction: minimize}\n",
    )
    assert main(["run", str(spec), "--results-dir", str(tmp_path / "results")]) == 0
    trials = pd.read_csv(tmp_path / "results" / "reload" / "trials.csv").set_index("max_batch_size")
    assert trials.loc[8, "state"] == "FAIL" and trials.loc[1, "state"] == "COMPLETE"


def test_storage_errors_are_one_line_without_the_password(tmp_path, mlp_file, capsys):
    spec = write_spec(tmp_path, SPEC.replace("MODEL", str(mlp_file)))
    status = main(
        [
            "run",
            str(spec),
            "--results-dir",
            str(tmp_path / "results"),
            "--storage",
            "postgresql://me:s3cret@127.0.0.1:9/db",
        ]
    )
    err = capsys.readouterr().err
    assert status == 1
    assert "storage postgresql://me:***@127.0.0.1:9/db" in err and "s3cret" not in err and "Traceback" not in err


@pytest.mark.slow
def test_two_workers_share_a_postgresql_study(tmp_path, mlp_file, postgres_url):
    """Two sweepers, one study in a real PostgreSQL: the trials are shared, not run twice."""
    body = SPEC.replace("MODEL", str(mlp_file)).replace("trials: 3", "trials: 4, heartbeat_s: 2")
    spec = write_spec(tmp_path, body.replace("confirm_repeats: 1", "confirm_repeats: 0"))
    command = [sys.executable, "-m", "sweeper.cli", "run", str(spec), "--storage", postgres_url, "--results-dir"]
    first = subprocess.Popen([*command, str(tmp_path / "a")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "a" / "e2e" / "trials" / "0" / "server.log"
    deadline = time.monotonic() + 90
    while not log.is_file():  # the first worker has enqueued the baseline and started it
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.2)
    second = subprocess.run([*command, str(tmp_path / "b")], capture_output=True, text=True, timeout=300)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 0, second.stderr
    trials = optuna.load_study(study_name="e2e", storage=postgres_url).trials
    measured = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and "repeat_of" not in t.user_attrs]
    assert len(measured) == 4 and len({tuple(sorted(t.params.items())) for t in measured}) == 4
    assert sum(bool(t.user_attrs.get("baseline")) for t in measured) == 1
    ran_in = {
        n: w
        for w in ("a", "b")
        for n in pd.read_csv(tmp_path / w / "e2e" / "trials.csv")["number"]
        if (tmp_path / w / "e2e" / "trials" / str(n)).is_dir()
    }
    assert set(ran_in.values()) == {"a", "b"}, "both workers measured trials"
    # Tables are written from the shared study: the worker that finished last lists every trial,
    # the other worker's included.
    written = [set(pd.read_csv(tmp_path / worker / "e2e" / "trials.csv")["number"]) for worker in ("a", "b")]
    assert {t.number for t in measured} in written, written
