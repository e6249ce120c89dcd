"""Capacity repeatability: each configuration's capacity on three fresh servers, and what it cost.

For each configuration a one-configuration study is run with ``sweeper run`` (the spec's default
load windows, ``confirm_repeats: 2``: the trial and two repeats, each on a fresh server); its
capacity's range over median across the three servers is the spread. Also: the wall time of
the studies and, for each load that decided a capacity (the highest within the budget), the
requests behind it, its verdict and the throughput of each of its takes (the search's
measurement, then its retakes). ``--retakes 0 2`` runs each configuration once per value of
``load.capacity.retakes``, one after the other, so that both see the same state of the host;
``--rounds`` repeats the whole. Before each study the host's CPU rate is probed (a pure-Python
loop on every core for one second; millions of iterations per second and core): on a shared
virtual machine it moves on its own, and a study run in a slow spell measures a slow server.
``--checkout DIR`` runs another checkout's sweeper (a ``git worktree`` of an earlier commit)
with this venv, for a before/after on the same host.

    .venv/bin/python benchmarks/capacity_repeatability.py MODEL.onnx [--budget 60] [--retakes 0 2]
        [--rounds 1] [--checkout DIR] [--generator auto|builtin|perf_analyzer]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from sweeper.results import deciding_takes

CONFIGURATIONS = ("1,off,1", "8,off,1", "8,0,1", "8,0,2")
"""max_batch_size, max_queue_delay_us, instance_count (HTTP, FP32)."""
SPEC = """study: {{name: {name}, trials: 1, sampler: grid, confirm_repeats: 2, neighbours: 0, anchor_every: 0}}
model:
  name: {model}
  source: {{onnx: {path}}}
search_space:
  max_batch_size: [{mbs}]
  max_queue_delay_us: [{delay}]
  instance_count: [{instances}]
  protocol: [http]
  precision: [fp32]
baseline: {{max_batch_size: {mbs}, max_queue_delay_us: {delay}, instance_count: {instances}, protocol: http}}
load:
  generator: {generator}
  concurrency: [1]
  capacity: {{low: 1, high: 64, resolution: 2{retakes}}}
objectives:
  - {{metric: capacity, percentile: p99_ms, budget_ms: {budget:g}, direction: maximize}}
"""


def _spin(seconds: float) -> int:
    count, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        count += 1
    return count


def host_rate() -> float:
    """Millions of loop iterations per second and core, every core busy for one second."""
    cores = os.cpu_count() or 1
    with multiprocessing.Pool(cores) as pool:
        return sum(pool.map(_spin, [1.0] * cores)) / cores / 1e6


def run_one(
    model: Path, config: str, budget: float, folder: Path, checkout: Path | None, generator: str, retakes: int | None
) -> dict:
    """One configuration's study: its capacity on three servers, its wall time, its deciding loads."""
    mbs, delay, instances = config.split(",")
    name = f"rep-{mbs}-{delay}-{instances}-{retakes}-{time.monotonic_ns()}"
    rate = host_rate()
    spec = folder / f"{name}.yaml"
    spec.write_text(
        SPEC.format(
            name=name,
            model=model.stem,
            path=model,
            mbs=mbs,
            delay=delay,
            instances=instances,
            budget=budget,
            generator=generator,
            retakes="" if retakes is None else f", retakes: {retakes}",
        )
    )
    env = dict(os.environ, PYTHONPATH=str(checkout)) if checkout else dict(os.environ)
    command = [sys.executable, "-m", "sweeper.cli", "run", str(spec), "--results-dir", str(folder), "--no-report"]
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, cwd=checkout or Path.cwd(), stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    column = f"capacity@p99_ms<={budget:g}"
    trials = pd.read_csv(folder / name / "trials.csv")
    row = trials.iloc[0]
    rows = pd.read_csv(folder / name / "measurements.csv")
    deciding = [_deciding(rows, number, column, budget) for number in sorted(set(rows["number"]))]
    return {
        "configuration": f"mbs={mbs} delay={delay} x{instances}",
        "retakes": "default" if retakes is None else retakes,
        "host M/s": round(rate, 1),
        "median": row[column],
        "low": row[f"{column}:lo"],
        "high": row[f"{column}:hi"],
        "spread": (row[f"{column}:hi"] - row[f"{column}:lo"]) / row[column] if row[column] else float("nan"),
        "servers": int(row["measured"]),
        "wall_s": round(wall, 1),
        "loads measured": len(rows),
        "deciding loads (load, throughput of each take, requests of all takes, takes within)": ", ".join(
            d for d in deciding if d
        ),
    }


def _deciding(rows: pd.DataFrame, number: int, column: str, budget: float) -> str | None:
    """One server's deciding load (``sweeper.results.deciding_takes``: the last one retaken, or
    without retakes the highest that held): its takes' throughputs, the requests of all its
    takes and how many of them held the budget."""
    rows = rows.assign(
        **{c: None for c in ("search", "retake", "remeasured", "verdict") if c not in rows}
    )  # older checkouts
    takes = deciding_takes(rows, number, column)
    if takes.empty:
        return None
    said = takes["verdict"].fillna("")
    within = int((said.str.startswith("within") | ((said == "") & (takes["p99_ms"] <= budget))).sum())
    throughputs = "/".join(f"{t:.0f}" for t in takes["throughput"])
    return f"{takes['level'].iloc[0]} {throughputs} {int(takes['requests'].sum())}r {within}/{len(takes)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--budget", type=float, default=60.0)
    parser.add_argument("--configurations", nargs="+", default=list(CONFIGURATIONS), metavar="MBS,DELAY,N")
    parser.add_argument("--checkout", type=Path, help="run this checkout's sweeper (default: this one)")
    parser.add_argument("--generator", choices=["auto", "builtin", "perf_analyzer"], default="auto")
    parser.add_argument(
        "--retakes",
        type=int,
        nargs="+",
        help="load.capacity.retakes values, each in turn (default: the spec's default)",
    )
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sweeper-repeat-") as folder:
        results = [
            {"round": number + 1}
            | run_one(args.model.resolve(), c, args.budget, Path(folder), args.checkout, args.generator, retakes)
            for number in range(args.rounds)
            for c in args.configurations
            for retakes in args.retakes or [None]
        ]
    table = pd.DataFrame(results)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    for (round_, retakes), group in table.groupby(["round", "retakes"]):
        spreads = group["spread"].dropna()  # none where every server's capacity was 0
        left_out = (
            f" ({len(group) - len(spreads)} with capacity 0 on every server left out)"
            if len(spreads) < len(group)
            else ""
        )
        print(
            f"round {round_}, retakes {retakes}: spread (range over median) "
            f"median {spreads.median():.1%}, max {spreads.max():.1%}{left_out}; wall {group['wall_s'].sum():.0f} s; "
            f"host rate {group['host M/s'].min():.1f}-{group['host M/s'].max():.1f} M/s"
        )


if __name__ == "__main__":
    main()
