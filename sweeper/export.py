"""Stage 9: export the chosen trial as a Triton model repository, ready to deploy.

Picks: ``knee`` (default; see ``sweeper.report.knee``) among the feasible Pareto-optimal
trials that pass every ``--where``; ``trial N``; ``min:<metric@cN>`` / ``max:<metric@cN>``
among the feasible trials that pass every ``--where``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import operator
import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path

import optuna
import pandas as pd

from sweeper.errors import UsageError
from sweeper.repository import write_model_repository
from sweeper.report import knee
from sweeper.results import tables
from sweeper.spec import KNOBS, METRICS, TrialConfig
from sweeper.study import stored_model_io
from sweeper.triton_config import build_model_config, to_pbtxt

_CONDITION = re.compile(r"^\s*([\w@.]+)\s*(<=|>=|<|>|==)\s*([-+]?[\d.]+(?:[eE][-+]?\d+)?)\s*$")
_OPERATORS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt, "==": operator.eq}


@dataclasses.dataclass(frozen=True)
class Exported:
    trial: int
    config: TrialConfig
    model_dir: Path
    pbtxt: str
    record: dict


def candidates(study: optuna.Study) -> pd.DataFrame:
    """Completed trials with every measured metric as a ``<metric>@c<N>`` column."""
    result = tables(study)
    trials = result.trials[result.trials["state"] == "COMPLETE"].drop(columns=result.objectives)
    wide = result.measurements.pivot(index="number", columns="concurrency", values=list(METRICS))
    wide.columns = [f"{metric}@c{level}" for metric, level in wide.columns]
    return trials.merge(wide, left_on="number", right_index=True)


def parse_condition(text: str, columns: list[str]) -> tuple[str, str, float]:
    match = _CONDITION.match(text)
    if match is None:
        raise UsageError(f"--where '{text}': expected '<metric@cN> <op> <number>' with op one of <= >= < > ==")
    column, op, value = match.group(1), match.group(2), float(match.group(3))
    if column not in columns:
        raise UsageError(f"--where '{text}': no column '{column}'", hint=f"measured: {', '.join(columns)}")
    return column, op, value


def choose(study: optuna.Study, pick: str, where: list[str]) -> pd.Series:
    frame = candidates(study)
    if frame.empty:
        raise UsageError(f"study '{study.study_name}' has no completed trial to export")
    metric_columns = [c for c in frame.columns if "@c" in c]
    conditions = [parse_condition(text, metric_columns) for text in where]
    trial_pick = re.fullmatch(r"trial\s+(\d+)", pick.strip())
    if trial_pick:
        number = int(trial_pick.group(1))
        if number not in set(frame["number"]):
            raise UsageError(f"--pick trial {number}: no completed trial {number}",
                             hint=f"completed: {', '.join(map(str, frame['number']))}")
        pool = frame[frame["number"] == number]
    else:
        pool = frame[frame["feasible"]]
    passing = pool
    for column, op, value in conditions:
        passing = passing[_OPERATORS[op](passing[column], value)]
    if passing.empty:
        raise UsageError(
            f"no {'such ' if trial_pick else 'feasible '}trial meets {' and '.join(where)}",
            hint="closest: " + _closest(pool if not pool.empty else frame, conditions),
        )
    if trial_pick:
        return passing.iloc[0]
    objectives = list(study.user_attrs.get("objectives", []))
    directions = [d.name.lower() for d in study.directions]
    if pick == "knee":
        front = _front(passing, objectives, directions)
        return passing[passing["number"] == knee(front, objectives, directions)].iloc[0]
    extreme = re.fullmatch(r"(min|max):([\w@.]+)", pick.strip())
    if extreme is None:
        raise UsageError(f"--pick '{pick}': expected knee, 'trial N', min:<metric@cN> or max:<metric@cN>")
    column = extreme.group(2)
    if column not in metric_columns:
        raise UsageError(f"--pick '{pick}': no column '{column}'", hint=f"measured: {', '.join(metric_columns)}")
    index = passing[column].idxmin() if extreme.group(1) == "min" else passing[column].idxmax()
    return passing.loc[index]


def _front(frame: pd.DataFrame, objectives: list[str], directions: list[str]) -> pd.DataFrame:
    """Rows of ``frame`` that no other row dominates."""
    signs = [1 if d == "minimize" else -1 for d in directions]
    values = frame[objectives].to_numpy() * signs
    keep = [
        not any((other <= row).all() and (other < row).any() for other in values)
        for row in values
    ]
    return frame[keep]


def _closest(frame: pd.DataFrame, conditions: list[tuple[str, str, float]]) -> str:
    """The three trials that miss the conditions by the least (relative shortfall)."""
    def shortfall(row: pd.Series) -> float:
        total = 0.0
        for column, op, value in conditions:
            if not _OPERATORS[op](row[column], value):
                total += abs(row[column] - value) / (abs(value) or 1.0)
        return total

    ranked = frame.assign(_miss=frame.apply(shortfall, axis=1)).sort_values("_miss").head(3)
    columns = sorted({c for c, _, _ in conditions})
    return "; ".join(
        f"trial {int(r['number'])} (" + ", ".join(f"{c}={r[c]:.4g}" for c in columns) + ")"
        for _, r in ranked.iterrows()
    )


def export(study: optuna.Study, directory: Path, out: Path, *, pick: str, where: list[str], backend: str) -> Exported:
    row = choose(study, pick, where)
    config = TrialConfig(**{knob: _plain(row[knob]) for knob in KNOBS})
    source = directory / "models" / config.precision / "model.onnx"
    if not source.is_file():
        raise UsageError(f"{source} is missing", hint="the study folder must hold the models it built")
    inputs, outputs = stored_model_io(study, source)
    model_name = study.user_attrs.get("model", study.study_name)
    model = build_model_config(model_name, inputs, outputs, config, backend=backend, gpu=bool(study.user_attrs.get("gpu")))
    write_model_repository(out, model, source, link=False)
    metrics = {c: float(row[c]) for c in row.index if "@c" in c}
    record = {
        "study": study.study_name,
        "trial": int(row["number"]),
        "pick": pick,
        "where": where,
        "parameters": config.as_dict(),
        "client_protocol": config.protocol,
        "client_protocol_note": f"protocol is client-side: send requests over {config.protocol.upper()} "
        "(config.pbtxt does not set it)",
        "metrics": metrics,
        "accuracy": {"max_abs_error": float(row["max_abs_error"]), "cosine_similarity": float(row["cosine_similarity"])},
        "backend": backend,
        "hardware": _hardware(),
        "versions": _versions(study),
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    model_dir = out / model_name
    (model_dir / "sweeper-export.json").write_text(json.dumps(record, indent=2) + "\n")
    return Exported(int(row["number"]), config, model_dir, to_pbtxt(model), record)


def _plain(value: object) -> object:
    return value.item() if hasattr(value, "item") else value


def _hardware() -> dict:
    gpus = []
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=False)
        gpus = [line for line in listed.stdout.splitlines() if line.startswith("GPU")]
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {"machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count(),
            "system": platform.platform(), "gpus": gpus}


def _versions(study: optuna.Study) -> dict:
    packages = {}
    for name in ("triton-sweeper", "optuna", "onnxruntime", "onnxruntime-gpu", "onnx", "tritonclient"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {**packages, "tritonserver": study.user_attrs.get("server_version"), "python": platform.python_version()}
