"""The built-in load generator held to perf_analyzer, side by side on the same server.

For each model (the demo MLP; a model whose output is 1 MiB), protocol (HTTP, gRPC) and
concurrency (1, 4), both generators measure the same running server in alternation, ROUNDS
times, with the same windows and stability rule; the medians of p50 and throughput are
compared (builtin / perf_analyzer). Goal: both ratios within 15 % of 1. Beside them: Triton's
own request latency (server_ms, from its statistics) under each generator, and each
generator's CPU time per request: on a shared 2-core host the client's CPU is taken from the
server.

    .venv/bin/python benchmarks/load_fidelity.py [--rounds 3] [--window 1.0]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _models import demo_model, serve, wide_output_model, workload

from sweeper.launchers import LocalLauncher
from sweeper.load import BuiltinGenerator, Measurement, PerfAnalyzerGenerator, find_perf_analyzer
from sweeper.spec import LoadSpec
from sweeper.vocabulary import TrialConfig

GENERATORS = ("builtin", "perf_analyzer")


def _median(runs: list[Measurement], figure) -> float:
    return statistics.median(figure(m) for m in runs)


def row(name: str, protocol: str, concurrency: int, runs: dict[str, list[Measurement]]) -> str:
    """One table row: medians of both generators and their ratios."""
    p50 = {g: _median(runs[g], lambda m: m.p50_ms) for g in GENERATORS}
    thr = {g: _median(runs[g], lambda m: m.throughput) for g in GENERATORS}
    server = {g: _median(runs[g], lambda m: m.server_ms) for g in GENERATORS}
    cpu = {g: _median(runs[g], lambda m: 1e3 * m.client_cpu / m.throughput) for g in GENERATORS}
    builtin, analyzer = GENERATORS
    return (
        f"| {name} | {protocol} | {concurrency} | {p50[builtin]:.3f} ms | {p50[analyzer]:.3f} ms | "
        f"{p50[builtin] / p50[analyzer]:.2f} | {thr[builtin]:.0f}/s | {thr[analyzer]:.0f}/s | "
        f"{thr[builtin] / thr[analyzer]:.2f} | {server[builtin]:.3f} / {server[analyzer]:.3f} ms | "
        f"{cpu[builtin]:.3f} / {cpu[analyzer]:.3f} ms |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=float, default=1.0)
    args = parser.parse_args()
    settings = LoadSpec(warmup_s=1.0, window_s=args.window, stability_tolerance=0.15, max_windows=8).settings
    analyzer = PerfAnalyzerGenerator(find_perf_analyzer(None))
    builtin = BuiltinGenerator()
    launcher = LocalLauncher()
    launcher.preflight()
    print(f"{analyzer.describe()}; rounds {args.rounds}; window {args.window} s; medians")
    print(
        "| model | protocol | c | p50 builtin | p50 perf_analyzer | ratio | thr builtin | thr perf_analyzer | ratio "
        "| server_ms builtin / pa | client CPU per request builtin / pa |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    config = TrialConfig(8, "off", 1, "http", "fp32")
    with tempfile.TemporaryDirectory() as folder:
        for make in (demo_model, wide_output_model):
            source = make(Path(folder))
            load = workload(source)
            with serve(launcher, source, config, Path(folder) / source.name) as server:
                for protocol in ("http", "grpc"):
                    for concurrency in (1, 4):
                        runs: dict[str, list[Measurement]] = {g: [] for g in GENERATORS}
                        for _ in range(args.rounds):  # alternating, so drift hits both alike
                            runs["builtin"].append(
                                builtin.measure(server.endpoints, protocol, load, concurrency, settings)
                            )
                            runs["perf_analyzer"].append(
                                analyzer.measure(server.endpoints, protocol, load, concurrency, settings)
                            )
                        print(row(source.name, protocol, concurrency, runs), flush=True)


if __name__ == "__main__":
    main()
