"""At a latency budget, the sweeper against NVIDIA's Model Analyzer, one after the other on this
machine, then both picks measured again by one instrument.

1. Model Analyzer 1.58 (PyPI ``triton-model-analyzer``, installed into a virtual environment of
   its own: it pins Optuna 3.6) in local mode, its default brute search (max_batch_size 1..32
   with dynamic batching, 1..2 instances, concurrency 1..64 per configuration) under
   ``--latency-budget``, against the same tritonserver (nvidia-pytriton's, through a wrapper that
   gives it the python backend as the sweeper's local launcher does) and the same perf_analyzer.
2. The sweeper on the same space plus the protocol (HTTP or gRPC, which Model Analyzer cannot
   search): capacity at p99 within the budget (primary) and server memory, perf_analyzer,
   confirmation on.
3. Both picks measured again, interleaved (A B A B ...) on fresh servers: the capacity at the
   budget by the sweeper's search with perf_analyzer, each pick over its own protocol.

Prints each tool's wall time, its pick and claimed figure, the re-measured capacities (median,
lowest, highest) and their ratio; writes summary.json to ``--out``.

    .venv/bin/python benchmarks/model_analyzer.py [--budget-ms 10] [--trials 12] [--confirm-candidates 2]
        [--repeats 4] [--out DIR] [--model-analyzer-from DIR] [--open-loop]

``--open-loop`` also runs the sweeper with ``load.mode: request_rate`` (capacity in requests/s
at the budget, requests on a schedule, queueing included) and measures every pick both closed
and open loop: how the pick changes between the two.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _models import demo_model, serve, workload

from sweeper.export import chosen
from sweeper.launchers import LocalLauncher
from sweeper.launchers._local import pytriton_server_dir
from sweeper.load import CapacityTarget, PerfAnalyzerGenerator, find_perf_analyzer
from sweeper.repository import write_model
from sweeper.spec import LoadSpec, load_spec
from sweeper.sweep import run_sweep
from sweeper.triton_config import apply_trial, parse_pbtxt
from sweeper.vocabulary import TrialConfig, capacity_column, knob_label

MA_VERSION = "1.58.0"
MODEL = "demo_mlp"
BATCH_SIZES = [1, 2, 4, 8, 16, 32]  # Model Analyzer's automatic search: powers of two up to its max


def ma_environment(folder: Path) -> Path:
    """The virtual environment with Model Analyzer (created on first use); its ``bin``."""
    binary = folder / "bin" / "model-analyzer"
    if not binary.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
        subprocess.run(
            [str(folder / "bin" / "pip"), "install", "-q", f"triton-model-analyzer=={MA_VERSION}"], check=True
        )
    return binary.parent


def triton_wrapper(folder: Path, launcher: LocalLauncher) -> Path:
    """A ``tritonserver`` that Model Analyzer can start: nvidia-pytriton's binary with the
    python backend linked as the local launcher links it, this venv's Python for the stub."""
    binary = pytriton_server_dir() / "bin" / "tritonserver"
    backends = launcher.backend_directory
    script = folder / "tritonserver"
    script.write_text(
        "#!/bin/sh\n"
        f'export PATH="{Path(sys.executable).parent}:$PATH"\n'
        f'export PYTHONPATH="{backends / "python"}${{PYTHONPATH:+:$PYTHONPATH}}"\n'
        f'exec "{binary}" --backend-directory="{backends}" "$@"\n'
    )
    script.chmod(0o755)
    return script


def run_model_analyzer(work: Path, source, launcher: LocalLauncher, budget_ms: float, ma_bin: Path) -> dict:
    """Model Analyzer's profile of the demo model; its pick (highest throughput within the
    budget), what it claims for it, and its wall time."""
    repository = work / "repository"
    base = apply_trial(source.template, TrialConfig(8, 0, 1, "grpc", "fp32"), serve_with="python")
    write_model(repository, source, base, source.onnx_file)
    config = {
        "model_repository": str(repository),
        "profile_models": [MODEL],
        "triton_launch_mode": "local",
        "triton_server_path": str(triton_wrapper(work, launcher)),
        "perf_analyzer_path": str(Path(sys.executable).parent / "perf_analyzer"),
        "run_config_search_max_instance_count": 2,
        "run_config_search_max_model_batch_size": max(BATCH_SIZES),
        "run_config_search_max_concurrency": 64,
        "latency_budget": budget_ms,
        "export_path": str(work / "export"),
        "checkpoint_directory": str(work / "checkpoints"),
        "output_model_repository_path": str(work / "output"),
        "override_output_model_repository": True,
        "skip_detailed_reports": True,  # the summary writes the results CSV read below
    }
    (work / "export").mkdir(parents=True, exist_ok=True)
    config_file = work / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    started = time.perf_counter()
    with open(work / "model-analyzer.log", "w") as log:
        done = subprocess.run(
            [str(ma_bin / "model-analyzer"), "profile", "-f", str(config_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PATH": f"{ma_bin}:{os.environ['PATH']}"},
            cwd=work,
        )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"model-analyzer failed (exit {done.returncode}): see {work / 'model-analyzer.log'}")
    found = model_analyzer_pick(work, budget_ms)
    found["seconds"] = round(seconds, 1)
    (work / "result.json").write_text(json.dumps({**found, "pick": dataclasses.asdict(found["pick"])}))
    return found


def model_analyzer_pick(work: Path, budget_ms: float) -> dict:
    """Model Analyzer's pick from its results table: the first row (its ranking, best first) that
    satisfies its constraints, read back from the config it wrote for it."""
    results = pd.read_csv(work / "export" / "results" / "metrics-model-inference.csv")
    throughput = next(c for c in results.columns if c.startswith("Throughput"))
    p99 = next(c for c in results.columns if c.startswith("p99"))
    best = results[results["Satisfies Constraints"] == "Yes"].iloc[0]
    served = parse_pbtxt((work / "output" / best["Model Config Path"] / "config.pbtxt").read_text())
    count = served.instance_group[0].count if served.instance_group else 1
    delay = served.dynamic_batching.max_queue_delay_microseconds if served.HasField("dynamic_batching") else "off"
    pick = TrialConfig(served.max_batch_size, delay, count, "grpc", "fp32")
    return {
        "configurations": int(results["Model Config Path"].nunique()),
        "pick": pick,
        "claimed": f"{best[throughput]:.0f}/s at concurrency {int(best['Concurrency'])} (p99 {best[p99]:.2f} ms)",
    }


CLOSED_LOOP = {"concurrency": [1], "capacity": {"low": 1, "high": 64, "resolution": 2}}
OPEN_LOOP = {
    "mode": "request_rate",
    "request_rates": [100],
    "capacity": {"low": 500, "high": 16000, "resolution": 500},
}
"""The loads of each mode: requests in flight (closed loop, as Model Analyzer measures), or
requests/s on a schedule (open loop: capacity in requests/s, queueing included)."""


def run_the_sweeper(work: Path, budget_ms: float, trials: int, candidates: int | None, mode: str) -> dict:
    """The sweeper on the same space plus the protocol, closed or open loop (``mode``); its
    export pick and claimed capacity."""
    loads = OPEN_LOOP if mode == "request_rate" else CLOSED_LOOP
    level = {"request_rate": 100} if mode == "request_rate" else {"concurrency": 1}
    spec = {
        "study": {
            "name": "vs-model-analyzer",
            "trials": trials,
            "seed": 0,
            "confirm_repeats": 2,
            "confirm_candidates": candidates,
        },
        "model": {
            "name": MODEL,
            "source": {"pytorch": "sweeper.examples:mlp"},
            "inputs": [{"name": "features", "datatype": "FP32", "shape": [256]}],
        },
        "search_space": {
            "max_batch_size": BATCH_SIZES,
            "max_queue_delay_us": [0],
            "instance_count": [1, 2],
            "protocol": ["http", "grpc"],
            "precision": ["fp32"],
        },
        "baseline": {"max_batch_size": 8, "max_queue_delay_us": 0, "instance_count": 1, "protocol": "http"},
        "load": {"generator": "perf_analyzer", **loads},
        "objectives": [
            {
                "metric": "capacity",
                "percentile": "p99_ms",
                "budget_ms": budget_ms,
                "direction": "maximize",
                "primary": True,
            },
            {"metric": "server_memory_mb", "direction": "minimize"},
        ],
        "constraints": [{"metric": "p99_ms", **level, "max": budget_ms}],
    }
    work.mkdir(parents=True, exist_ok=True)
    path = work / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    started = time.perf_counter()
    result = run_sweep(load_spec(path), results_dir=work / "results")
    seconds = time.perf_counter() - started
    row, choice = chosen(result.record, "knee", [])
    column = capacity_column("p99_ms", budget_ms)
    delay = row["max_queue_delay_us"]
    pick = TrialConfig(
        int(row["max_batch_size"]),
        delay if delay == "off" else int(delay),
        int(row["instance_count"]),
        row["protocol"],
        "fp32",
    )
    runs = sum(1 for t in result.record.trials if t.kind == "complete")
    return {
        "seconds": round(seconds, 1),
        "configurations": int(len(result.tables.trials)),
        "runs": runs,
        "pick": pick,
        "claimed": f"{row[column]:.0f}/s at {_load_words(mode, row[column + ':load'])} "
        f"(median of {int(row['measured'])})",
        "why": list(choice.why) if choice is not None else [],
    }


def _load_words(mode: str, load: float) -> str:
    return f"{load:g} requests/s" if mode == "request_rate" else f"concurrency {load:g}"


def remeasure(
    work: Path, source, launcher: LocalLauncher, picks: dict, budget_ms: float, repeats: int, mode: str
) -> dict:
    """Each pick's capacity at the budget on fresh servers, interleaved, with perf_analyzer,
    closed or open loop (``mode``)."""
    generator = PerfAnalyzerGenerator(find_perf_analyzer(None))
    settings = LoadSpec(**(OPEN_LOOP if mode == "request_rate" else CLOSED_LOOP)).settings
    target = CapacityTarget(capacity_column("p99_ms", budget_ms), "p99_ms", budget_ms)
    load = workload(source)
    found: dict[str, list[float]] = {name: [] for name in picks}
    for round_ in range(repeats):
        for name, pick in picks.items():
            with serve(launcher, source, pick, work / f"{mode}-{name}-{round_}") as server:
                _, (capacity,) = generator.measure_trial(server.endpoints, pick.protocol, load, settings, [target])
            found[name].append(capacity.throughput)
            print(
                f"  {mode} round {round_ + 1} {name}: {capacity.throughput:.0f}/s at "
                f"{_load_words(mode, capacity.load)}",
                flush=True,
            )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-ms", type=float, default=10.0)
    parser.add_argument("--trials", type=int, default=12, help="the sweeper's study.trials")
    parser.add_argument("--repeats", type=int, default=4, help="re-measurements of each pick")
    parser.add_argument(
        "--confirm-candidates",
        type=int,
        default=2,
        help="the sweeper's study.confirm_candidates (2 gave the same front and pick as all on the recorded "
        "pairs: benchmarks/confirmation_cost.py)",
    )
    parser.add_argument("--out", type=Path, default=Path("/tmp/sweeper-vs-model-analyzer"))
    parser.add_argument(
        "--open-loop",
        action="store_true",
        help="also sweep with load.mode request_rate, and measure every pick closed and open loop",
    )
    parser.add_argument(
        "--model-analyzer-from", type=Path, help="a model-analyzer folder of an earlier run: its pick and time"
    )
    args = parser.parse_args()
    work = args.out / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True)
    launcher = LocalLauncher()
    launcher.preflight()
    source = demo_model(work)
    if args.model_analyzer_from is not None:  # a finished Model Analyzer run of this script (its result.json)
        analyzer = json.loads((args.model_analyzer_from / "result.json").read_text())
        analyzer["pick"] = TrialConfig(**analyzer["pick"])
    else:
        ma_bin = ma_environment(args.out / "ma-venv")  # kept for the next run (installing is no part of the timing)
        analyzer = run_model_analyzer(work / "model-analyzer", source, launcher, args.budget_ms, ma_bin)
    print(
        f"Model Analyzer {MA_VERSION}: {analyzer['seconds']:.0f} s, {analyzer['configurations']} configurations; "
        f"pick {knob_label(analyzer['pick'])}: {analyzer['claimed']}",
        flush=True,
    )
    sweepers = {
        "sweeper": run_the_sweeper(
            work / "sweeper", args.budget_ms, args.trials, args.confirm_candidates, "concurrency"
        )
    }
    if args.open_loop:
        sweepers["sweeper_open_loop"] = run_the_sweeper(
            work / "sweeper-open-loop", args.budget_ms, args.trials, args.confirm_candidates, "request_rate"
        )
    for name, sweeper in sweepers.items():
        print(
            f"{name}: {sweeper['seconds']:.0f} s, {sweeper['configurations']} configurations, {sweeper['runs']} runs; "
            f"pick {knob_label(sweeper['pick'])}: {sweeper['claimed']}",
            flush=True,
        )
        for sentence in sweeper["why"]:
            print(f"  {sentence}")
    picks = {"model_analyzer": analyzer["pick"], **{name: found["pick"] for name, found in sweepers.items()}}
    summary: dict = {"budget_ms": args.budget_ms, "model_analyzer": {**analyzer, "pick": knob_label(analyzer["pick"])}}
    summary.update({name: {**found, "pick": knob_label(found["pick"])} for name, found in sweepers.items()})
    modes = ["concurrency", "request_rate"] if args.open_loop else ["concurrency"]
    for mode in modes:
        print(f"the picks measured again, interleaved on fresh servers ({args.repeats} each, perf_analyzer, {mode}):")
        found = remeasure(work / "remeasure", source, launcher, picks, args.budget_ms, args.repeats, mode)
        for name, values in found.items():
            print(f"  {name}: median {statistics.median(values):.0f}/s ({min(values):.0f}-{max(values):.0f})")
            summary[name][f"remeasured_{mode}"] = values
        for name in sweepers:
            summary[name][f"against_model_analyzer_{mode}"] = _compare(found[name], found["model_analyzer"], name)
    sweeper = sweepers["sweeper"]
    summary["wall_time_ratio"] = sweeper["seconds"] / analyzer["seconds"]
    print(
        f"wall time: sweeper {sweeper['seconds']:.0f} s / Model Analyzer {analyzer['seconds']:.0f} s = "
        f"{summary['wall_time_ratio']:.2f}x"
    )
    (work / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {work / 'summary.json'}")


def _compare(mine: list[float], theirs: list[float], name: str) -> dict:
    """``mine`` against ``theirs``, measured in the same rounds: the ratio of the medians, whether
    the ranges are apart, and the ratio within each round (rounds share the machine's state)."""
    ratio = statistics.median(mine) / statistics.median(theirs) if statistics.median(theirs) else float("inf")
    apart = min(mine) > max(theirs) or max(mine) < min(theirs)
    rounds = [a / b for a, b in zip(mine, theirs) if b]
    print(
        f"  {name} / Model Analyzer: {ratio:.2f}x by the medians ({'ranges apart' if apart else 'ranges overlap'}); "
        f"within each round {min(rounds):.2f}-{max(rounds):.2f}x, ahead in {sum(r > 1 for r in rounds)} of "
        f"{len(rounds)}"
    )
    return {"ratio_of_medians": ratio, "ranges_apart": apart, "round_ratios": rounds}


if __name__ == "__main__":
    main()
