"""How often a study picks what the whole space says it should, replayed on the recorded grid.

No servers: the sweep's own loop (``search_efficiency.replay``: the baseline first, the sampler,
the knee's neighbours for the last quarter) runs against benchmarks/grid-demo.csv, one study per
seed, each lookup's objectives multiplied by exp(N(0, noise)) (a fresh server's spread on this
machine is 1-12 %, see the repeatability table). A study's pick is ``recommend`` over its first
measurements; it agrees when the grid's figures of its pick are within ``--within`` of the grid's
own pick on every objective (max_batch_size 8 and 32 with delay 0 serve the same batches at
concurrency 8: one answer under two names). Three independent studies agree with probability
about agreement cubed, which is what benchmarks/front_stability.py measures on live servers.

    .venv/bin/python benchmarks/pick_agreement.py [--seeds 100] [--noise 0 0.05 0.1]
        [--objectives p50_ms@1:minimize throughput@8:maximize] [--grid FILE]
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from search_efficiency import DEMO, HERE, _constraints, read_grid, replay

from sweeper.climb import first_figures
from sweeper.front import recommend
from sweeper.search import config_key
from sweeper.spec import LoadedSpec, load_spec, read_yaml
from sweeper.vocabulary import KNOBS


class NoisyGrid(Mapping):
    """The grid, each lookup's objective columns drawn again around the recorded figure."""

    def __init__(self, grid: dict[tuple, pd.Series], columns: list[str], noise: float, seed: int) -> None:
        self._grid, self._columns, self._noise = grid, columns, noise
        self._rng = np.random.default_rng(seed)

    def __getitem__(self, key: tuple) -> pd.Series:
        row = self._grid[key].copy()
        for column in self._columns:
            row[column] = float(row[column]) * float(np.exp(self._rng.normal(0.0, self._noise)))
        return row

    def __iter__(self):
        return iter(self._grid)

    def __len__(self) -> int:
        return len(self._grid)


def load_demo(objectives: list[str] | None) -> LoadedSpec:
    """The demo spec, its objectives replaced by ``metric@concurrency:direction`` where given."""
    if not objectives:
        return load_spec(DEMO)
    spec = read_yaml(DEMO)
    spec["objectives"] = []
    for entry in objectives:
        metric, _, rest = entry.partition("@")
        level, _, direction = rest.partition(":")
        spec["objectives"].append({"metric": metric, "concurrency": int(level), "direction": direction})
    with tempfile.TemporaryDirectory(prefix="pick-agreement-") as folder:
        path = Path(folder) / "demo.yaml"
        path.write_text(yaml.safe_dump(spec))
        return load_spec(path)


def grid_pick(loaded: LoadedSpec, grid: dict[tuple, pd.Series]) -> tuple[tuple, pd.Series]:
    """The configuration the whole grid recommends, as a study that measured it all would."""
    rows = []
    for key, row in grid.items():
        if row["state"] != "COMPLETE" or any(v > 0 for v in _constraints(loaded, row).values()):
            continue
        figures = {c: float(row[c]) for c in loaded.ranking.columns}
        spread = {f"{c}:{end}": v for c, v in figures.items() for end in ("lo", "hi")}
        rows.append({"number": len(rows), "key": key, **figures, **spread})
    frame = pd.DataFrame(rows)
    ranking = loaded.ranking
    number = recommend(frame, ranking.columns, ranking.directions, ranking.primary).number
    key = frame.loc[number, "key"]
    return key, grid[key]


def study_pick(study: optuna.Study, loaded: LoadedSpec) -> tuple:
    ranking = loaded.ranking
    figures = first_figures(study.trials, ranking)
    feasible = figures[figures["feasible"].astype(bool)]
    number = recommend(feasible, ranking.columns, ranking.directions, ranking.primary).number
    return config_key(next(t.params for t in study.trials if t.number == number))


def _label(row: pd.Series) -> str:
    return " ".join(str(row[k]) for k in KNOBS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default=str(HERE / "grid-demo.csv"))
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.05, 0.1])
    parser.add_argument("--within", type=float, default=0.06)
    parser.add_argument("--objectives", nargs="+", help="metric@concurrency:direction, replacing the demo's")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")
    loaded = load_demo(args.objectives)
    grid = read_grid(Path(args.grid))
    columns = loaded.ranking.columns
    _, best = grid_pick(loaded, grid)
    print(f"objectives {', '.join(columns)}; the grid's pick: {_label(best)} {[float(best[c]) for c in columns]}")
    print("| noise | agree | P(3 of 3) | most common picks |")
    print("|---|---|---|---|")
    for noise in args.noise:
        picks: collections.Counter = collections.Counter()
        for seed in range(args.seeds):
            study = replay(loaded, NoisyGrid(grid, columns, noise, seed), "tpe", seed, loaded.spec.study.trials)
            picks[study_pick(study, loaded)] += 1
        agree = sum(
            count
            for key, count in picks.items()
            if all(abs(float(grid[key][c]) / float(best[c]) - 1) <= args.within for c in columns)
        )
        share = agree / args.seeds
        common = ", ".join(f"{_label(grid[key])} ({count})" for key, count in picks.most_common(3))
        print(f"| {noise:.0%} | {agree} of {args.seeds} | {share**3:.2f} | {common} |", flush=True)


if __name__ == "__main__":
    main()
