"""Restart vs reload: the same configurations measured both ways, and what each pays per trial.

Runs a part of the demo's space (max_batch_size 8, FP32, delays off / 0 / 500 us, 1 or 2
instances, HTTP) twice with the grid sampler: once with a fresh server per trial
(``server.reuse: restart``), once with one server for the study (``reload``). Prints each
configuration's p50 at concurrency 1 and throughput at 8 in both modes, their ratio, and the
median start_s / stop_s of each mode (goal for reload: start + stop <= 1 s; agreement within
the repeatability of benchmarks/repeatability.py, or 10 % p50).

    .venv/bin/python benchmarks/reuse_modes.py [--results-dir results]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sweeper.spec import load_spec, read_yaml
from sweeper.sweep import run_sweep
from sweeper.vocabulary import KNOBS, knob_label

DEMO = Path(__file__).resolve().parent.parent / "search_spaces" / "demo.yaml"


def run(mode: str, results: Path) -> pd.DataFrame:
    spec = read_yaml(DEMO)
    spec["study"].update(name=f"reuse-{mode}", sampler="grid", trials=6)
    spec["search_space"] = {
        "max_batch_size": [8],
        "max_queue_delay_us": ["off", 0, 500],
        "instance_count": [1, 2],
        "protocol": ["http"],
        "precision": ["fp32"],
    }
    spec["baseline"] = {
        "max_batch_size": 8,
        "max_queue_delay_us": 500,
        "instance_count": 1,
        "protocol": "http",
        "precision": "fp32",
    }
    spec.setdefault("server", {})["reuse"] = mode
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump(spec, handle)
    try:
        trials = run_sweep(load_spec(Path(handle.name)), results_dir=results).tables.trials
    finally:
        Path(handle.name).unlink()
    return trials[trials["state"] == "COMPLETE"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", default="results")
    args = parser.parse_args()
    results = Path(args.results_dir)
    frames = {mode: run(mode, results) for mode in ("restart", "reload")}
    merged = frames["restart"].merge(frames["reload"], on=list(KNOBS), suffixes=(" restart", " reload"))
    print("| configuration | p50@c1 restart | p50@c1 reload | ratio | throughput@c8 restart | reload | ratio |")
    print("|---|---|---|---|---|---|---|")
    for _, row in merged.iterrows():
        p50 = row["p50_ms@c1 reload"] / row["p50_ms@c1 restart"]
        throughput = row["throughput@c8 reload"] / row["throughput@c8 restart"]
        print(
            f"| {knob_label(row)} | {row['p50_ms@c1 restart']:.3f} ms | {row['p50_ms@c1 reload']:.3f} ms | {p50:.2f} | "
            f"{row['throughput@c8 restart']:.0f}/s | {row['throughput@c8 reload']:.0f}/s | {throughput:.2f} |"
        )
    for mode, frame in frames.items():
        print(
            f"{mode}: start_s median {statistics.median(frame['start_s']):.3f} s, stop_s median "
            f"{statistics.median(frame['stop_s']):.3f} s ({len(frame)} trials)"
        )


if __name__ == "__main__":
    main()
