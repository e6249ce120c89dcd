"""Repeatability: the same configuration measured N times, a fresh server each time.

For each generator, the demo model (max_batch_size 8, dynamic_batching { }, 1 instance, HTTP)
is started anew and measured at concurrency 1 and 8 with the demo's load settings; the spread
of p50 and throughput is the median absolute deviation relative to the median (goal <= 5 %),
and how many of the measurements were stable.

    .venv/bin/python benchmarks/repeatability.py [--runs 5] [--window 0.5] [--warmup 0.5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _models import demo_model, serve, workload

from sweeper.launchers import LocalLauncher
from sweeper.load import BuiltinGenerator, PerfAnalyzerGenerator, find_perf_analyzer
from sweeper.spec import LoadSpec
from sweeper.vocabulary import TrialConfig


def spread(values: list[float]) -> float:
    """Median absolute deviation relative to the median."""
    middle = statistics.median(values)
    return statistics.median(abs(v - middle) for v in values) / middle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--window", type=float, default=0.5)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--tolerance", type=float, default=0.15)
    args = parser.parse_args()
    settings = LoadSpec(
        warmup_s=args.warmup, window_s=args.window, stability_tolerance=args.tolerance, max_windows=6
    ).settings
    analyzers = {"builtin": BuiltinGenerator(), "perf_analyzer": PerfAnalyzerGenerator(find_perf_analyzer(None))}
    launcher = LocalLauncher()
    launcher.preflight()
    config = TrialConfig(8, 0, 1, "http", "fp32")
    print(
        f"{args.runs} fresh servers per generator; warm-up {args.warmup} s, window {args.window} s, "
        f"tolerance {args.tolerance}"
    )
    print("| generator | c | p50 median | p50 spread (MAD) | throughput median | throughput spread (MAD) | stable |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        source = demo_model(Path(folder))
        load = workload(source)
        for name, analyzer in analyzers.items():
            results: dict[int, list] = {1: [], 8: []}
            for run in range(args.runs):
                with serve(launcher, source, config, Path(folder) / f"{name}-{run}") as server:
                    for level in results:
                        results[level].append(analyzer.measure(server.endpoints, "http", load, level, settings))
            for level, runs in results.items():
                p50 = [m.p50_ms for m in runs]
                throughput = [m.throughput for m in runs]
                stable = sum(m.stable for m in runs)
                print(
                    f"| {name} | {level} | {statistics.median(p50):.3f} ms | {spread(p50):.1%} | "
                    f"{statistics.median(throughput):.0f}/s | {spread(throughput):.1%} | {stable}/{len(runs)} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
