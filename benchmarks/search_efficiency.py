"""How close each sampler gets to the best front, replayed against the recorded demo grid.

No servers: the objective looks each configuration up in benchmarks/grid-demo.csv (every
configuration of search_spaces/demo.yaml, measured once by benchmarks/record_grid.py). The
sweep's own loop runs for real: the baseline first, repeated proposals asked again, the same
constraints (the spec's p99 bound and the accuracy guard). For each sampler and seed, the
hypervolume of the feasible front found after K trials is given as a fraction of the whole
grid's (same reference point: 10 % beyond the grid's worst feasible values); medians over the
seeds, and the worst seed. "plain" is the sampler run by Optuna alone, drawing with
replacement: its distinct configurations after the budget show what the redraw saves.

    .venv/bin/python benchmarks/search_efficiency.py [--seeds 10] [--samplers tpe random ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sweeper.errors import TrialError
from sweeper.front import hypervolume, reference_point
from sweeper.record import TrialWriter, kind_of
from sweeper.samplers import SAMPLERS, make_sampler
from sweeper.search import config_key
from sweeper.spec import LoadedSpec, load_spec
from sweeper.study import Proposer, run_study
from sweeper.vocabulary import BATCHING_OFF, KNOBS

HERE = Path(__file__).resolve().parent
DEMO = HERE.parent / "search_spaces" / "demo.yaml"
CHECKPOINTS = (5, 10, 20, 30)


def _delay(value: str) -> object:
    return BATCHING_OFF if value == BATCHING_OFF else int(value)


def read_grid(path: Path) -> dict[tuple, pd.Series]:
    """The recorded grid by configuration."""
    grid = pd.read_csv(path, dtype={"max_queue_delay_us": str})
    rows = {}
    for _, row in grid.iterrows():
        params = {knob: row[knob] for knob in KNOBS}
        params["max_queue_delay_us"] = _delay(params["max_queue_delay_us"])
        params["max_batch_size"], params["instance_count"] = (
            int(params["max_batch_size"]),
            int(params["instance_count"]),
        )
        rows[config_key(params)] = row
    return rows


def _constraints(loaded: LoadedSpec, row: pd.Series) -> dict[str, float]:
    found = {bound.label: bound.excess(row[bound.column]) for bound in loaded.ranking.constraints}
    found["cosine_similarity"] = loaded.spec.accuracy.min_cosine_similarity - row["cosine_similarity"]
    return found


def build_sampler(name: str, seed: int, size: int) -> optuna.samplers.BaseSampler:
    """A sampler of the table, or ``tpe/startup=N`` and ``tpe/optuna`` (Optuna's defaults) to
    compare TPE's settings."""
    if name == "tpe/optuna":
        return optuna.samplers.TPESampler(seed=seed)
    if name.startswith("tpe/startup="):
        startup = int(name.split("=")[1])
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True, group=True)
    return make_sampler(name, seed, size)


def replay(loaded: LoadedSpec, grid: dict[tuple, pd.Series], sampler: str, seed: int, budget: int) -> optuna.Study:
    """The sweep's loop against the grid: a fresh in-memory study, the sampler, the budget."""
    spec = loaded.spec.model_copy(
        update={"study": loaded.spec.study.model_copy(update={"seed": seed, "trials": budget})}
    )
    replayed = dataclasses.replace(loaded, spec=spec)
    directions = [o.direction for o in spec.objectives]
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(
        storage=storage, directions=directions, sampler=build_sampler(sampler, seed, loaded.space_size)
    )
    propose = Proposer(replayed)

    def objective(trial: optuna.Trial) -> tuple[float, ...]:
        config = propose(trial)
        row = grid[config_key(config.as_dict())]
        writer = TrialWriter(trial)
        if row["state"] != "COMPLETE":
            writer.failed(str(row["failure"]))
            raise TrialError(str(row["failure"]))
        writer.measured([], [], _constraints(replayed, row))
        return tuple(float(row[o.column]) for o in spec.objectives)

    run_study(study, replayed, None, storage, exclusive=True, objective=objective)
    return study


def front_fractions(
    study: optuna.Study, loaded: LoadedSpec, whole: float, reference: list[float], checkpoints: tuple[int, ...]
) -> list[float]:
    """Hypervolume of the feasible front after each checkpoint, as a fraction of ``whole``."""
    counted = [t for t in study.trials if kind_of(t) in ("complete", "failed")]
    directions = [o.direction for o in loaded.spec.objectives]
    fractions = []
    for k in checkpoints:
        feasible = [
            t.values
            for t in counted[:k]
            if t.state == optuna.trial.TrialState.COMPLETE and all(v <= 0 for v in t.constraints.values())
        ]
        fractions.append(hypervolume(np.array(feasible), directions, reference) / whole if feasible else 0.0)
    return fractions


def plain_distinct(loaded: LoadedSpec, grid: dict[tuple, pd.Series], sampler: str, seed: int, budget: int) -> int:
    """Distinct configurations Optuna's sampler alone proposes in ``budget`` trials."""
    directions = [o.direction for o in loaded.spec.objectives]
    study = optuna.create_study(directions=directions, sampler=build_sampler(sampler, seed, loaded.space_size))
    study.enqueue_trial(loaded.baseline.as_dict())

    def objective(trial: optuna.Trial) -> tuple[float, ...]:
        params = {knob: trial.suggest_categorical(knob, loaded.space[knob]) for knob in KNOBS}
        row = grid[config_key(params)]
        return tuple(float(row[o.column]) if row["state"] == "COMPLETE" else math.nan for o in loaded.spec.objectives)

    study.optimize(objective, n_trials=budget)
    return len({config_key(t.params) for t in study.trials})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default=str(HERE / "grid-demo.csv"))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument(
        "--samplers",
        nargs="+",
        default=list(SAMPLERS),
        help="names of the sampler table, or tpe/optuna, tpe/startup=N to compare TPE settings",
    )
    parser.add_argument("--budget", type=int, default=max(CHECKPOINTS))
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")
    loaded = load_spec(DEMO)
    grid = read_grid(Path(args.grid))
    assert len(grid) == loaded.space_size, f"the grid has {len(grid)} of {loaded.space_size} configurations"
    objectives = [o.column for o in loaded.spec.objectives]
    rows = [
        r for r in grid.values() if r["state"] == "COMPLETE" and all(v <= 0 for v in _constraints(loaded, r).values())
    ]
    values = pd.DataFrame([[r[c] for c in objectives] for r in rows], columns=objectives)
    directions = [o.direction for o in loaded.spec.objectives]
    reference = reference_point(values, directions)
    whole = hypervolume(values.to_numpy(), directions, reference)
    tenth = math.ceil(loaded.space_size / 10)
    print(
        f"grid: {loaded.space_size} configurations, {len(rows)} feasible; 10 % of the space = {tenth} trials; "
        f"{args.seeds} seeds"
    )
    header = " | ".join(f"HV after {k}" for k in CHECKPOINTS)
    print(
        f"| sampler | {header} | HV after {tenth} | proposals per trial | plain Optuna: distinct in {args.budget} | s |"
    )
    print("|---|" + "---|" * (len(CHECKPOINTS) + 4))
    for sampler in args.samplers:
        started = time.perf_counter()
        fractions, tenths, proposals, plain = [], [], [], []
        for seed in range(args.seeds):
            study = replay(loaded, grid, sampler, seed, args.budget)
            found = front_fractions(study, loaded, whole, reference, (*CHECKPOINTS, tenth))
            fractions.append(found[:-1])
            tenths.append(found[-1])
            counted = [t for t in study.trials if kind_of(t) in ("complete", "failed")]
            proposals.append(len(study.trials) / max(1, len(counted)))
            plain.append(plain_distinct(loaded, grid, sampler, seed, args.budget))
        cells = " | ".join(
            f"{statistics.median(f[i] for f in fractions):.1%} (min {min(f[i] for f in fractions):.0%})"
            for i in range(len(CHECKPOINTS))
        )
        print(
            f"| {sampler} | {cells} | {statistics.median(tenths):.1%} (min {min(tenths):.0%}) | "
            f"{statistics.median(proposals):.2f} | {statistics.median(plain):.0f} | "
            f"{time.perf_counter() - started:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
