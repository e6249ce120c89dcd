"""Does the front survive a second look? Independent studies of the demo model, same spec,
fresh servers, different study names: how often they agree on the knee, how much their fronts
overlap, and how far the knee's figures move between them, without and with confirmation.

Two spaces: ``grid``, 24 configurations of the demo model (max_batch_size 8/32, queue delay
off/0/5000 us, 1-2 instances, HTTP/gRPC, FP32) that every study measures whole, so the studies
differ by measurement alone; and ``demo``, search_spaces/demo.yaml as it is (TPE, 20 trials).
Each study confirms (``study.confirm_repeats``, default 2); "without" is the same study read by
its first measurements (``tables(..., confirmed=False)``: what it reported before confirmation),
"with" by its medians, the knee's tie broken by ``sweeper.results.TIE_RULE``. A study agrees on
the knee when its pick is the most common pick, or a declared tie that includes it.

    .venv/bin/python benchmarks/front_stability.py [--studies 3] [--spaces grid demo] [--repeats 2]
        [--out FILE.json] [--keep DIR]
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sweeper.front import knee
from sweeper.results import study_recommendation, tables
from sweeper.spec import load_spec, read_yaml
from sweeper.sweep import run_sweep
from sweeper.vocabulary import knob_label

DEMO = Path(__file__).resolve().parent.parent / "search_spaces" / "demo.yaml"
GRID_SPACE = {
    "max_batch_size": [8, 32],
    "max_queue_delay_us": ["off", 0, 5000],
    "instance_count": [1, 2],
    "protocol": ["http", "grpc"],
    "precision": ["fp32"],
}


def _spec(folder: Path, space: str, index: int, repeats: int) -> Path:
    spec = read_yaml(DEMO)  # the sweeper's reader: off stays a word
    spec["study"].update(name=f"stability-{space}-{index}", confirm_repeats=repeats)
    if space == "grid":
        spec["study"].update(sampler="grid", trials=24)
        spec["search_space"] = GRID_SPACE
    path = folder / f"{space}-{index}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _knees(record) -> dict:
    """The knee by first measurements, and by confirmed figures with its tie."""
    first, confirmed = tables(record, confirmed=False), tables(record)
    objectives, directions = first.objectives, first.ranking.directions
    labels = {int(r["number"]): knob_label(r) for _, r in confirmed.trials.iterrows() if r["state"] == "COMPLETE"}
    before = knee(first.pareto, objectives, directions)
    choice = study_recommendation(confirmed)
    rows = confirmed.trials.set_index("number")
    return {
        "without": {
            "knee": labels[before],
            "front": sorted(labels[int(n)] for n in first.pareto["number"]),
            "figures": {c: float(first.trials.set_index("number").loc[before, c]) for c in objectives},
        },
        "with": {
            "knee": labels[choice.number],
            "tie": sorted(labels[n] for n in choice.tied),
            "baseline_kept": choice.baseline_kept,
            "front": sorted(labels[int(n)] for n in confirmed.pareto["number"]),
            "figures": {c: float(rows.loc[choice.number, c]) for c in objectives},
            "spread": {c: [float(rows.loc[choice.number, f"{c}:{e}"]) for e in ("lo", "hi")] for c in objectives},
        },
        # The knee's neighbours the study measured (study.neighbours): where its last trials went.
        "neighbours": [
            f"trial {t.number} (of {t.neighbour_of}): {knob_label(t.config)}"
            for t in record.trials
            if t.neighbour_of is not None and t.config is not None
        ],
    }


def _summary(runs: list[dict], mode: str) -> dict:
    picks = [run[mode]["knee"] for run in runs]
    reference = collections.Counter(picks).most_common(1)[0][0]
    agree = sum(run[mode]["knee"] == reference or reference in run[mode].get("tie", []) for run in runs)
    fronts = [set(run[mode]["front"]) for run in runs]
    jaccard = [len(a & b) / len(a | b) for a, b in itertools.combinations(fronts, 2)]
    figures = {c: [run[mode]["figures"][c] for run in runs] for c in runs[0][mode]["figures"]}
    return {
        "knee": reference,
        "agree": f"{agree} of {len(runs)}",
        "same_pick": f"{picks.count(reference)} of {len(runs)}",
        "jaccard_mean": sum(jaccard) / len(jaccard) if jaccard else 1.0,
        "knee_figures": {
            c: {"min": min(v), "max": max(v), "spread": (max(v) - min(v)) / min(v)} for c, v in figures.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=3)
    parser.add_argument("--spaces", nargs="+", choices=("grid", "demo"), default=["grid", "demo"])
    parser.add_argument("--repeats", type=int, default=2, help="study.confirm_repeats")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--keep", type=Path, help="keep the studies' specs and results in this folder")
    args = parser.parse_args()
    found: dict = {}
    with tempfile.TemporaryDirectory(prefix="front-stability-") as scratch:
        folder = Path(args.keep or scratch)
        folder.mkdir(parents=True, exist_ok=True)
        for space in args.spaces:
            runs = []
            for index in range(1, args.studies + 1):
                started = time.perf_counter()
                result = run_sweep(load_spec(_spec(folder, space, index, args.repeats)), results_dir=folder / "results")
                runs.append({**_knees(result.record), "seconds": round(time.perf_counter() - started, 1)})
                print(f"{space} study {index}: {json.dumps(runs[-1])}", flush=True)
            found[space] = {"runs": runs, "without": _summary(runs, "without"), "with": _summary(runs, "with")}
            for mode in ("without", "with"):
                summary = found[space][mode]
                print(
                    f"{space} {mode} confirmation: knee {summary['knee']} agreed {summary['agree']} "
                    f"(same pick {summary['same_pick']}); front Jaccard {summary['jaccard_mean']:.2f}; knee figures "
                    + ", ".join(
                        f"{c} {v['min']:.4g}..{v['max']:.4g} ({v['spread']:.0%})"
                        for c, v in summary["knee_figures"].items()
                    ),
                    flush=True,
                )
    if args.out is not None:
        args.out.write_text(json.dumps(found, indent=2) + "\n")


if __name__ == "__main__":
    main()
