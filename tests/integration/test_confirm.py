"""A front you can trust, on the real server: the front's candidates measured again on fresh
servers (interleaved, stored, resumable), figures as medians with their spread, a tie between
configurations that serve alike, the baseline's drift, and a study that refuses another machine."""

from __future__ import annotations

import json
import re
import signal
import subprocess

import numpy as np
import optuna
import pandas as pd
import pytest

from sweeper.cli import main
from tests.conftest import FAST_LOAD, refused, write_spec
from tests.integration.conftest import start_sweep, wait_for
from tests.integration.test_report import CHROMIUM_FLAGS, _chromium

SPEC = """
study: {name: NAME, trials: TRIALS, sampler: grid, confirm_repeats: REPEATS, anchor_every: ANCHOR}
model:
  name: mlp
  source: {onnx: MODEL}
search_space:
  max_batch_size: [8]
  max_queue_delay_us: [0]
  instance_count: [1]
  protocol: [http]
  precision: [fp32]
SPACE
baseline: {max_batch_size: 8, max_queue_delay_us: 0, instance_count: 1, protocol: http, precision: fp32}
OBJECTIVES
"""
TWO_OBJECTIVES = """objectives:
  - {metric: p50_ms, concurrency: 1, direction: minimize}
  - {metric: throughput, concurrency: 2, direction: maximize}
"""


def _spec(tmp_path, mlp_file, *, name, trials, repeats, anchor=0, space="", objectives=TWO_OBJECTIVES):
    body = (
        SPEC.replace("NAME", name)
        .replace("TRIALS", str(trials))
        .replace("REPEATS", str(repeats))
        .replace("ANCHOR", str(anchor))
        .replace("MODEL", str(mlp_file))
        .replace("SPACE", space)
        .replace("OBJECTIVES", objectives)
    )
    return write_spec(tmp_path, body + FAST_LOAD.replace("concurrency: [1]", "concurrency: [1, 2]"), f"{name}.yaml")


def _study(directory, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{directory / 'study.db'}")


def _repeats(study) -> list[tuple[int, int, str]]:
    """(trial number, the trial it repeats, state) of every repeat, in the order they ran."""
    return [
        (t.number, t.user_attrs["repeat_of"], t.state.name)
        for t in sorted(study.trials, key=lambda t: t.number)
        if "repeat_of" in t.user_attrs
    ]


@pytest.mark.browser
@pytest.mark.slow
def test_the_front_is_confirmed_interleaved_and_drawn_with_its_spread(tmp_path, mlp_file, capsys):
    """Three configurations that serve about alike, candidates all: up to two more fresh servers
    each, a round at a time (A B C, then those still racing, the baseline always); trials.csv
    ranks by medians beside the lowest and highest; every repeat is a row of measurements.csv;
    the report draws error bars in a real browser; the baseline's anchor shows its drift."""
    space = "  max_queue_delay_us: [0, 100]\n  protocol: [grpc, http]"  # alike: within the candidates' margin
    spec = _spec(tmp_path, mlp_file, name="confirm", trials=3, repeats=2, anchor=2, space=space)
    spec.write_text(spec.read_text().replace("  max_queue_delay_us: [0]\n", "").replace("  protocol: [http]\n", ""))
    assert main(["run", str(spec), "--results-dir", str(tmp_path / "results")]) == 0
    printed = capsys.readouterr().out
    directory = tmp_path / "results" / "confirm"
    trials = pd.read_csv(directory / "trials.csv").set_index("number")
    assert len(trials) == 3, "repeats are not configurations"
    assert "drift" in trials.columns, "the per-trial drift flag"
    study = _study(directory, "confirm")
    anchors = {t.number for t in study.trials if t.user_attrs.get("anchor")}
    assert len(anchors) == 1, "after 2 of the 3 trials"
    order = [of for number, of, _ in _repeats(study) if number not in anchors]
    candidates = list(dict.fromkeys(order))
    first_round, second_round = order[: len(candidates)], order[len(candidates) :]
    assert len(candidates) >= 2 and first_round == candidates, "every candidate once, interleaved"
    assert second_round == [n for n in candidates if n in second_round] and 0 in second_round, "then the race"
    measurements = pd.read_csv(directory / "measurements.csv")
    for number in candidates:
        mine = (measurements["number"] == number) | (measurements["repeat_of"] == number)
        p50 = sorted(measurements[mine & (measurements["level"] == "c1")]["p50_ms"])
        row = trials.loc[number]
        anchored = len(anchors) if number == 0 else 0  # the baseline's anchor is a measurement too
        assert row["measured"] == len(p50) == 2 + (number in second_round) + anchored
        assert row["p50_ms@c1:lo"] == min(p50) and row["p50_ms@c1:hi"] == max(p50)
        assert row["p50_ms@c1"] == pytest.approx(float(np.median(p50))), "the median"
    assert "were measured" in printed and "Drift: baseline (trial 0) re-measured" in printed
    summary = (directory / "summary.md").read_text()
    assert "## How far the front can be trusted" in summary and "were measured" in summary
    assert "## Measured on" in summary
    dom = subprocess.run(
        [
            _chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            (directory / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    pareto = re.search(r'<div id="pareto".*?</div>\s*</div>', dom.stdout, re.S).group(0)
    assert 'class="errorbar"' in pareto, "plotly drew the error bars"


@pytest.mark.slow
def test_configurations_that_serve_alike_keep_the_baseline(tmp_path, mlp_file, capsys):
    """A parameter no backend reads: the two configurations (the baseline, with the parameter
    unset, and one with it set) serve identically, so their spreads over five fresh servers each
    overlap: nothing measurably beat the baseline, and the baseline is what is recommended and
    exported."""
    space = '  config:\n    parameters.sweeper_test_unused: ["a"]'  # and the baseline's unset value
    objectives = "objectives:\n  - {metric: p50_ms, concurrency: 1, direction: minimize}\n"
    spec = _spec(tmp_path, mlp_file, name="tie", trials=2, repeats=4, space=space, objectives=objectives)
    assert main(["run", str(spec), "--results-dir", str(tmp_path / "results")]) == 0
    printed = capsys.readouterr().out
    directory = tmp_path / "results" / "tie"
    trials = pd.read_csv(directory / "trials.csv").set_index("number")
    assert trials.loc[0, "measured"] == 5 and (trials["measured"] >= 2).all(), trials["measured"]
    kept = r"measurably beat (it|the baseline) on p50_ms@c1"
    assert re.search(kept, printed), printed[-2000:]
    assert re.search(kept, (directory / "summary.md").read_text())
    out = tmp_path / "export"
    assert main(["export", str(directory), "--out", str(out)]) == 0
    record = json.loads((out / "mlp" / "sweeper-export.json").read_text())
    assert record["trial"] == 0 and record["recommendation"]["baseline_kept"], record["recommendation"]
    assert record["recommendation"]["chosen_among"] == "confirmed"
    assert record["measured"] == 5 and record["spread"]["p50_ms@c1"][0] <= record["metrics"]["p50_ms@c1"]
    assert record["measured_by"]["backend"] == "python" and "not measured" in record["backend_note"]


def test_an_interrupted_confirmation_is_resumed_and_nothing_is_lost(tmp_path, mlp_file):
    spec = _spec(tmp_path, mlp_file, name="resume", trials=2, repeats=2, space="  instance_count: [1, 2]")
    spec.write_text(spec.read_text().replace("  instance_count: [1]\n", ""))
    results = tmp_path / "results"
    directory = results / "resume"
    sweep = start_sweep(spec, results)

    def a_repeat_done() -> bool:
        if not (directory / "study.db").is_file():
            return False
        try:
            return any(state == "COMPLETE" for _, _, state in _repeats(_study(directory, "resume")))
        except Exception:  # the database is being created
            return False

    wait_for(sweep, a_repeat_done, "a completed confirmation repeat")
    sweep.send_signal(signal.SIGTERM)
    assert sweep.wait(timeout=60) == 143
    before = [r for r in _repeats(_study(directory, "resume")) if r[2] == "COMPLETE"]
    assert 1 <= len(before) < 4
    assert main(["run", str(spec), "--results-dir", str(results)]) == 0
    after = _repeats(_study(directory, "resume"))
    complete = [r for r in after if r[2] == "COMPLETE"]
    assert set(before) <= set(complete), "what was measured is kept"
    trials = pd.read_csv(directory / "trials.csv")
    candidates = sorted({of for _, of, _ in complete})
    counts = {of: sum(1 for _, o, _ in complete if o == of) for of in candidates}
    assert set(counts.values()) <= {1, 2} and counts[0] == 2, f"two repeats at most (fewer: out of the race) {counts}"
    measured = trials.set_index("number").loc[candidates, "measured"]
    assert (measured == [counts[of] + 1 for of in candidates]).all(), "no repeat lost or doubled"


def test_a_study_measured_on_another_machine_is_refused_unless_allowed(tmp_path, mlp_file, capsys, monkeypatch):
    """The fingerprint is faked through SWEEPER_FINGERPRINT (sweeper.machine.FINGERPRINT_ENV): the
    only way to be two machines in one test."""
    spec = _spec(tmp_path, mlp_file, name="machines", trials=1, repeats=0, space="  instance_count: [1, 2]")
    spec.write_text(spec.read_text().replace("  instance_count: [1]\n", ""))
    results = tmp_path / "results"
    monkeypatch.setenv("SWEEPER_FINGERPRINT", json.dumps({"cpu": "Machine A", "cpus": 64}))
    assert main(["run", str(spec), "--results-dir", str(results)]) == 0
    capsys.readouterr()
    monkeypatch.setenv("SWEEPER_FINGERPRINT", json.dumps({"cpu": "Machine B", "cpus": 64}))
    database = results / "machines" / "study.db"
    before = database.read_bytes()
    argv = ["run", str(spec), "--results-dir", str(results), "--trials", "2"]
    err = refused(
        argv,
        capsys,
        tmp_path / "nothing",
        "study 'machines' was measured on another machine",
        "cpu: Machine A (the study) vs Machine B (here)",
        "--allow-other-machine",
    )
    assert err.count("\n") <= 2, "one line and its hint"
    assert database.read_bytes() == before, "nothing written"
    assert main([*argv, "--allow-other-machine"]) == 0
    summary = (results / "machines" / "summary.md").read_text()
    assert "Machine A x64" in summary and "Machine B x64" in summary, "the report lists both machines"
