"""Record the whole demo search space once: every configuration measured, as the demo measures.

Runs search_spaces/demo.yaml with the grid sampler over all of its configurations (study
``grid-demo``), then writes benchmarks/grid-demo.csv: the five knobs and, for each, every
measured metric at every concurrency, the accuracy figures and whether the trial was feasible
or failed. benchmarks/search_efficiency.py replays the samplers against this table.

    .venv/bin/python benchmarks/record_grid.py [--results-dir results] [--reuse restart]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sweeper.results import measured_metrics
from sweeper.spec import load_spec, read_yaml
from sweeper.sweep import run_sweep
from sweeper.vocabulary import KNOBS

HERE = Path(__file__).resolve().parent
DEMO = HERE.parent / "search_spaces" / "demo.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--reuse", choices=["restart", "reload"], default="restart")
    parser.add_argument("--out", default=str(HERE / "grid-demo.csv"))
    args = parser.parse_args()
    spec = read_yaml(DEMO)  # YAML 1.2 booleans: off stays off
    size = load_spec(DEMO).space_size
    spec["study"].update(name="grid-demo", sampler="grid", trials=size)
    spec.setdefault("server", {})["reuse"] = args.reuse
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump(spec, handle)
    try:
        result = run_sweep(load_spec(Path(handle.name)), results_dir=Path(args.results_dir)).tables
    finally:
        Path(handle.name).unlink()
    wide = measured_metrics(result)
    failed = result.trials[result.trials["state"] != "COMPLETE"][["number", *KNOBS, "state", "failure"]]
    columns = [
        "number",
        *KNOBS,
        *[c for c in wide.columns if "@c" in c],
        "feasible",
        "cosine_similarity",
        "max_abs_error",
        "stable",
        "generator",
    ]
    grid = pd.concat([wide[columns].assign(state="COMPLETE", failure=None), failed], ignore_index=True)
    grid.sort_values("number").to_csv(args.out, index=False)
    print(f"wrote {args.out}: {len(grid)} configurations ({len(failed)} failed)")


if __name__ == "__main__":
    main()
