"""Capacity search against an exhaustive sweep: does grow-then-bisect find what measuring every
concurrency 1..N finds, and at what cost?

For 3 configurations of the demo model, one fresh server each: the sweeper's capacity search
(p99 within the budget, concurrency 1..N, resolution 1, the demo's load settings), then every
concurrency 1..N on the same server, read by the same rule (the highest load within the budget
below every load that broke it). They agree when the two capacities are at most one
resolution step (``--resolution``) apart. Where p99 rises slowly through the budget, noise decides where it
crosses: the exhaustive sweep's own band (its first load over the budget .. its last load
within it) is printed, and whether the search's answer lies in it. Prints each side's loads
measured and seconds.

    .venv/bin/python benchmarks/capacity.py [--budget-ms 10] [--high 64] [--resolution 1] [--window 0.5]
        [--generator builtin]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _models import demo_model, serve, workload

from sweeper.launchers import LocalLauncher
from sweeper.load import (
    BuiltinGenerator,
    CapacityTarget,
    PerfAnalyzerGenerator,
    SearchBounds,
    capacity_of,
    find_perf_analyzer,
    search_capacity,
)
from sweeper.spec import CapacitySearchSpec, LoadSpec
from sweeper.vocabulary import TrialConfig, capacity_column

CONFIGS = (
    TrialConfig(8, 0, 1, "http", "fp32"),
    TrialConfig(1, "off", 1, "grpc", "fp32"),
    TrialConfig(32, 500, 2, "grpc", "fp32"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-ms", type=float, default=10.0)
    parser.add_argument("--high", type=int, default=64)
    parser.add_argument("--generator", choices=("builtin", "perf_analyzer"), default="builtin")
    parser.add_argument("--window", type=float, default=0.5, help="load.window_s")
    parser.add_argument("--resolution", type=int, default=1, help="load.capacity.resolution")
    args = parser.parse_args()
    settings = LoadSpec(
        warmup_s=0.5,
        window_s=args.window,
        stability_tolerance=0.15,
        max_windows=6,
        capacity=CapacitySearchSpec(low=1, high=args.high, resolution=args.resolution),
    ).settings
    generator = BuiltinGenerator() if args.generator == "builtin" else PerfAnalyzerGenerator(find_perf_analyzer(None))
    target = CapacityTarget(capacity_column("p99_ms", args.budget_ms), "p99_ms", args.budget_ms)
    bounds = SearchBounds(1, args.high, args.resolution, integer=True, unit="concurrency")
    launcher = LocalLauncher()
    launcher.preflight()
    print(
        f"{target.column}, concurrency 1..{args.high}, resolution {args.resolution}, window {args.window} s, "
        f"{generator.describe()}"
    )
    print(
        "| configuration | search: capacity (c, infer/s) | loads | s | exhaustive: capacity | loads | s "
        "| agree (1 step) | exhaustive band | search in band (1 step) | infer/s search vs exhaustive |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    agreed = banded = 0
    replays = []
    with tempfile.TemporaryDirectory() as folder:
        source = demo_model(Path(folder))
        load = workload(source)
        for index, config in enumerate(CONFIGS):
            with serve(launcher, source, config, Path(folder) / str(index)) as server:
                started = time.perf_counter()
                _, (found,) = generator.measure_trial(server.endpoints, config.protocol, load, settings, [target])
                searched_s = time.perf_counter() - started
                started = time.perf_counter()
                every = {
                    c: generator.measure(server.endpoints, config.protocol, load, c, settings)
                    for c in range(1, args.high + 1)
                }
                exhaustive_s = time.perf_counter() - started
            truth = capacity_of(every, target, bounds)
            replays.append((config, found, truth, every))
            agree = abs(found.load - truth.load) <= args.resolution
            agreed += agree
            within = [c for c, m in every.items() if m.p99_ms <= args.budget_ms]
            over = [c for c, m in every.items() if m.p99_ms > args.budget_ms]
            band = (min(over, default=args.high + 1) - 1, max(within, default=0))
            in_band = min(band) - args.resolution <= found.load <= max(band) + args.resolution
            banded += in_band
            print(
                f"| {config.max_batch_size}/{config.max_queue_delay_us}/x{config.instance_count}/{config.protocol} "
                f"| c{found.load:g}, {found.throughput:.0f}/s | {len(found.tried)} | {searched_s:.0f} "
                f"| c{truth.load:g}, {truth.throughput:.0f}/s | {len(every)} | {exhaustive_s:.0f} "
                f"| {'yes' if agree else 'no'} | c{min(band)}..c{max(band)} | {'yes' if in_band else 'no'} "
                f"| {found.throughput / truth.throughput - 1 if truth.throughput else float('nan'):+.1%} |",
                flush=True,
            )
    print(f"agree within one step: {agreed} of {len(CONFIGS)}; within the exhaustive band: {banded} of {len(CONFIGS)}")
    _replay_starts(replays, target, bounds, args.resolution)


def _replay_starts(replays: list, target: CapacityTarget, bounds: SearchBounds, resolution: float) -> None:
    """The search replayed on each configuration's exhaustive measurements (no server: every
    load it may try was measured), cold (doubling from low) and started where the study would
    start it: at its own earlier answer (a confirmation repeat) and at another configuration's
    capacity (a new trial whose nearest neighbour is that one)."""
    print()
    print("| configuration | start | loads | capacity | within one step of exhaustive |")
    print("|---|---|---|---|---|")
    for index, (config, found, truth, every) in enumerate(replays):
        other = replays[index - 1][2]
        starts = (("cold", None), (f"own c{found.load:g}", found.load), (f"other c{other.load:g}", other.load))
        for label, start in starts:
            if start == 0:
                continue
            started = dataclasses.replace(target, start=start)
            replayed = search_capacity(lambda c, curve=every: curve[int(c)], started, bounds)
            agree = abs(replayed.load - truth.load) <= resolution
            print(
                f"| {config.max_batch_size}/{config.max_queue_delay_us}/x{config.instance_count}/{config.protocol} "
                f"| {label} | {len(replayed.tried)} | c{replayed.load:g} | {'yes' if agree else 'no'} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
