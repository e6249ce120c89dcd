"""The benchmark scripts that must keep running: the GPU check's CPU dry run (where no GPU is
lent, the same flow on the CPU) and the replays against the recorded grid."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_the_gpu_check_runs_its_flow_on_the_cpu(tmp_path):
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OUT": str(tmp_path)},
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert json.loads((tmp_path / "facts.json").read_text())["status"] == 0
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert len(trials) == 2 and (trials["state"] == "COMPLETE").all()
    assert set(trials["generator"]) == {"perf_analyzer"} and set(trials["precision"]) == {"native"}
    assert trials.loc[0, "baseline"] and str(trials.loc[0, "max_queue_delay_us"]) == "100000"


def test_the_search_replay_reads_the_recorded_grid():
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "search_efficiency.py"),
            "--seeds",
            "1",
            "--samplers",
            "random",
            "grid",
            "--budget",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "grid: 120 configurations" in done.stdout, "144 combinations; with max_batch_size 1 the delays serve alike"
    rows = [line for line in done.stdout.splitlines() if line.startswith("| random") or line.startswith("| grid")]
    assert len(rows) == 2


def test_the_pick_replay_names_the_grids_pick_and_how_often_studies_agree():
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "pick_agreement.py"), "--seeds", "2", "--noise", "0.05"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "the grid's pick: " in done.stdout
    (row,) = [line for line in done.stdout.splitlines() if line.startswith("| 5%")]
    assert " of 2 | " in row
