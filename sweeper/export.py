"""Stage 9: export the chosen trial as a Triton model repository, ready to deploy.

Picks: ``knee`` (default; ``sweeper.front.knee``) among the feasible Pareto-optimal trials
that pass every ``--where``; ``trial N``; ``min:<metric@cN>`` / ``max:<metric@cN>`` among the
feasible trials that pass every ``--where``. The export writes what was measured: the model's
template config with the trial's knobs (``dynamic_batching { }`` for delay 0, no block for
``off``), and the model files of the trial's precision. A model folder is exported with its
own files and backend; an ONNX model for the onnxruntime backend (default) or as the
python-backend model the sweep served.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import operator
import platform
import re
from importlib import metadata
from pathlib import Path

import pandas as pd
from tritonclient.grpc import model_config_pb2 as mc

from sweeper.errors import SweeperError, UsageError
from sweeper.files import atomic_folder, write_atomic
from sweeper.fleet import Fleet, FleetTarget, fleet_of, sizing_capacity
from sweeper.front import Recommendation, recommendation_sentences
from sweeper.machine import machine_fingerprint
from sweeper.record import StudyRecord, TrialRecord
from sweeper.repository import write_model
from sweeper.results import measured_metrics, study_recommendation, tables
from sweeper.server_options import server_argv
from sweeper.source import ModelSource
from sweeper.triton_config import model_backend, parse_pbtxt, restore_gpu_fields, serve_as, to_pbtxt
from sweeper.vocabulary import COLUMN_PATTERN, NUMBER_PATTERN, Ranking, TrialConfig, is_metric

_CONDITION = re.compile(rf"^\s*({COLUMN_PATTERN})\s*(<=|>=|<|>|==)\s*({NUMBER_PATTERN})\s*$")
EXPORT_RECORD = "sweeper-export.json"
"""What an export writes beside config.pbtxt: what was measured, how, and why this configuration."""
_OPERATORS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt, "==": operator.eq}


@dataclasses.dataclass(frozen=True)
class Exported:
    """What an export wrote, for the command's summary."""

    trial: int
    config: TrialConfig
    backend: str
    model_dir: Path
    pbtxt: str
    why: tuple[str, ...] = ()
    """The recommendation in words (``--pick knee``)."""
    fleet: Fleet | None = None
    """The servers that serve ``--target-rate`` (None without one)."""


def parse_condition(text: str, columns: list[str]) -> tuple[str, str, float]:
    """``'p99_ms@c8 <= 20'`` -> (column, operator, value); UsageError naming what is allowed."""
    match = _CONDITION.match(text)
    if match is None:
        raise UsageError(f"--where '{text[:100]}': expected '<metric@cN> <op> <number>' with op one of <= >= < > ==")
    column, op, value = match.group(1), match.group(2), float(match.group(3))
    if column not in columns:
        raise UsageError(f"--where '{text[:100]}': no column '{column}'", hint=f"measured: {', '.join(columns)}")
    return column, op, value


def choose(study: StudyRecord, pick: str, where: list[str], ranking: Ranking | None = None) -> pd.Series:
    """The trial a pick rule and conditions select (the knee under the study's ranking, or
    ``ranking``)."""
    return chosen(study, pick, where, ranking)[0]


def chosen(
    study: StudyRecord, pick: str, where: list[str], ranking: Ranking | None = None
) -> tuple[pd.Series, Recommendation | None]:
    """``choose``'s trial, and for ``knee`` how it was chosen (``sweeper.front.recommend`` over
    the trials that pass every ``--where``: a confirmed front trial, or the baseline)."""
    result = tables(study, ranking)
    frame = measured_metrics(result)
    if frame.empty:
        raise UsageError(f"study '{study.name}' has no completed trial to export")
    metric_columns = [c for c in frame.columns if is_metric(c)]
    conditions = [parse_condition(text, metric_columns) for text in where]
    trial_pick = re.fullmatch(r"trial\s+(\d+)", pick.strip())
    pool = _pick_pool(study.name, frame, int(trial_pick.group(1)) if trial_pick else None)
    passing = pool
    for column, op, value in conditions:
        passing = passing[_OPERATORS[op](passing[column], value)]
    if passing.empty:
        raise UsageError(
            f"no {'such ' if trial_pick else 'feasible '}trial meets {' and '.join(where)}",
            hint="closest: " + closest(pool if not pool.empty else frame, conditions),
        )
    if trial_pick:
        return passing.iloc[0], None
    objectives = result.ranking.columns
    if pick == "knee":  # on confirmed medians; the baseline where nothing measurably beat it
        choice = study_recommendation(result, passing)
        why = recommendation_sentences(choice, passing[passing["feasible"]], objectives)
        return passing[passing["number"] == choice.number].iloc[0], dataclasses.replace(choice, why=tuple(why))
    extreme = re.fullmatch(rf"(min|max):({COLUMN_PATTERN})", pick.strip())
    if extreme is None:
        raise UsageError(f"--pick '{pick[:100]}': expected knee, 'trial N', min:<metric@cN> or max:<metric@cN>")
    column = extreme.group(2)
    if column not in metric_columns:
        raise UsageError(f"--pick '{pick[:100]}': no column '{column}'", hint=f"measured: {', '.join(metric_columns)}")
    index = passing[column].idxmin() if extreme.group(1) == "min" else passing[column].idxmax()
    return passing.loc[index], None


def _pick_pool(study_name: str, frame: pd.DataFrame, number: int | None) -> pd.DataFrame:
    """The trials a pick chooses among: trial ``number`` alone, or every feasible trial."""
    if number is not None:
        if number not in set(frame["number"]):
            raise UsageError(
                f"--pick trial {number}: no completed trial {number}",
                hint=f"completed: {', '.join(map(str, frame['number']))}",
            )
        return frame[frame["number"] == number]
    pool = frame[frame["feasible"]]
    if pool.empty:
        violations = frame.get("infeasible", pd.Series("", index=frame.index)).fillna("")
        shown = "; ".join(f"trial {int(n)} {v}".strip() for n, v in zip(frame["number"], violations))
        raise SweeperError(
            f"study '{study_name}' has no feasible trial to export: {shown[:400]}",
            hint="relax the constraint or the budget and run again, or export one with --pick 'trial N'",
        )
    return pool


def closest(frame: pd.DataFrame, conditions: list[tuple[str, str, float]]) -> str:
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


def export(
    study: StudyRecord,
    directory: Path,
    out: Path,
    *,
    pick: str,
    where: list[str],
    backend: str | None,
    ranking: Ranking | None = None,
    target: FleetTarget | None = None,
) -> Exported:
    """Write the chosen trial's model into the model repository ``out``: the config its server
    loaded, with only the backend changed where ``backend`` asks for another one; with a
    ``target``, the servers that serve it (``sweeper.fleet``)."""
    ranking = ranking or study.ranking
    sizing = sizing_capacity(ranking) if target is not None else None
    row, choice = chosen(study, pick, where, ranking)
    trial = study.trial(int(row["number"]))
    source = ModelSource.from_facts(study.facts["source"])
    backend, model_file = _backend_and_file(source, trial, directory, backend)
    model = served_config(trial, directory)
    measured = model_backend(model)
    model.name = source.name
    if model_file is not None:
        serve_as(model, backend, source.template)
    if source.user_template is not None:  # measured on a CPU host: the user's GPU fields go back
        restore_gpu_fields(model, source.user_template)
    record = _export_record(study, trial, row, ranking, pick, where, (model_backend(model), measured))
    record.update(_host_changes(source))
    if choice is not None:
        record["recommendation"] = _recommendation(choice)
    fleet = None
    if sizing is not None:
        closed_loop = all(m.request_rate is None for m in trial.measurements)
        fleet = fleet_of(row, sizing, target, closed_loop=closed_loop)
        record["fleet"] = fleet.as_dict()
    with atomic_folder(out / model.name) as staging:
        written = write_model(staging.parent, source, model, model_file, link=False, folder=staging)
        record["files"] = file_hashes(written)
        write_atomic(written / EXPORT_RECORD, json.dumps(record, indent=2) + "\n")
    why = choice.why if choice is not None else ()
    return Exported(trial.number, trial.config, record["backend"], out / model.name, to_pbtxt(model), why, fleet)


def _backend_and_file(
    source: ModelSource, trial: TrialRecord, directory: Path, backend: str | None
) -> tuple[str, Path | None]:
    """The backend to export for (``original``: a folder's own) and the ONNX file of the
    trial's precision (None for a folder of another format)."""
    onnx = source.onnx_file is not None
    backend = backend or ("onnxruntime" if source.kind != "repository" else "original")
    if backend != "original" and not onnx:
        raise UsageError(
            f"--backend {backend}: the model is not ONNX; it is exported with its own backend ({source.backend})"
        )
    if backend == "original" and source.kind != "repository":
        backend = "onnxruntime"
    if not onnx:
        return backend, None
    model_file = directory / "models" / trial.config.precision / "model.onnx"
    if not model_file.is_file():
        raise UsageError(f"{model_file} is missing", hint="the study folder must hold the models it built")
    return backend, model_file


def _recommendation(choice: Recommendation) -> dict:
    return {
        "knee_by_figures": choice.knee,
        "tie": list(choice.tied),
        "rule": choice.rule,
        "baseline_kept": choice.baseline_kept,
        "deciding_objectives": list(choice.deciding),
        "chosen_among": choice.pool,
        "why": list(choice.why),
    }


def file_hashes(folder: Path) -> dict[str, str]:
    """The SHA-256 of every file of an exported model folder but its record, by relative path:
    ``sweeper verify`` measures only what was exported."""
    return {
        str(path.relative_to(folder)): _sha256(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != EXPORT_RECORD
    }


def _sha256(path: Path) -> str:
    """A file's SHA-256, read in pieces (a model file can be larger than the memory to spare)."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for piece in iter(lambda: stream.read(1 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()


def served_config(trial: TrialRecord, directory: Path) -> mc.ModelConfig:
    """The config.pbtxt trial's server loaded: from its record, or (a schema 1 study) from the
    trial's folder."""
    text = trial.served_config
    if text is None:
        saved = directory / "trials" / str(trial.number) / "config.pbtxt"
        if not saved.is_file():
            raise UsageError(
                f"trial {trial.number}: its served config is neither in the study nor at {saved}",
                hint="export from the study folder 'sweeper run' wrote, with its trials/ folder",
            )
        text = saved.read_text(encoding="utf-8")
    return parse_pbtxt(text)


def _export_record(
    study: StudyRecord,
    trial: TrialRecord,
    row: pd.Series,
    ranking: Ranking,
    pick: str,
    where: list[str],
    backends: tuple[str, str],
) -> dict:
    """sweeper-export.json: what was picked and how, its figures, and what measured them."""
    config = trial.config
    backend, measured = backends
    note = None
    if backend != measured:
        note = f"measured with Triton's {measured} backend; exported for the {backend} backend, which was not measured"
    return {
        "study": study.name,
        "trial": trial.number,
        "pick": pick,
        "where": where,
        "ranked_by": {
            "objectives": [dataclasses.asdict(o) for o in ranking.objectives],
            "constraints": [b.label for b in ranking.constraints],
            "primary": ranking.primary,
        },
        **_client_and_server(config),
        "metrics": {c: float(row[c]) for c in row.index if is_metric(c) and not pd.isna(row[c])},
        "measured": int(row["measured"]),
        "spread": {c: [_number(row[f"{c}:lo"]), _number(row[f"{c}:hi"])] for c in ranking.columns},
        "spread_note": "the lowest and highest of the trial's measurements on fresh servers (its figures are "
        "their medians)"
        if row["measured"] > 1
        else "measured once: no spread (study.confirm_repeats measures the front again)",
        "measured_by": _measured_by(study, measured),
        "capacity": [c.as_dict() for c in trial.capacities],
        "accuracy": _accuracy_record(row, study.facts.get("accuracy")),
        "backend": backend,
        "measured_backend": measured,
        "backend_note": note,
        "generator": dataclasses.asdict(trial.generator) if trial.generator else None,
        "hardware": trial.machine or machine_fingerprint(),
        "versions": _versions(study),
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _client_and_server(config: TrialConfig) -> dict:
    """What config.pbtxt does not hold: the parameters, the clients' protocol, the server's options."""
    return {
        "parameters": config.as_dict(),
        "client_protocol": config.protocol,
        "client_protocol_note": f"protocol is client-side: send requests over {config.protocol.upper()} "
        "(config.pbtxt does not set it)",
        "server_options": server_argv(config.server_options),
        "server_options_note": "tritonserver options of the measured server: start yours with them "
        "(config.pbtxt does not hold them)"
        if config.server_options
        else None,
    }


def _accuracy_record(row: pd.Series, tolerance: dict | None) -> dict:
    """The trial's drift from the reference model, and each rule of the study's ``accuracy``
    it passed with its figure (``rules``; none for the reference precision's own file)."""
    figures = {name: _number(row.get(name)) for name in ("max_abs_error", "cosine_similarity", "top1_agreement")}
    rules = []
    for figure, key, holds in (
        ("cosine_similarity", "min_cosine_similarity", operator.ge),
        ("max_abs_error", "max_abs_error", operator.le),
        ("top1_agreement", "min_top1_agreement", operator.ge),
    ):
        limit, value = (tolerance or {}).get(key), figures[figure]
        if limit is not None and value is not None and holds(value, limit):
            rules.append(f"{figure} {value:.6g} {'>=' if holds is operator.ge else '<='} {limit} (accuracy.{key})")
    return {**figures, "rules": rules}


def _host_changes(source: ModelSource) -> dict:
    """What the record says of a config written for a GPU and measured on a host without one."""
    note = (
        "the config asks for a GPU; it was measured on a host without one with these changes, which the export "
        "undoes: its figures are that host's CPU's, not a GPU's"
    )
    return {"host_changes": list(source.host_changes), "host_changes_note": note if source.host_changes else None}


def _measured_by(study: StudyRecord, backend: str) -> dict:
    """What measured the trial: the launcher, server and backend, and what ``sweeper verify``
    serves and measures with again (the spec's server, load and request data, the tensors)."""
    return {
        "launcher": study.facts.get("launcher"),
        "server": (study.facts.get("fingerprint") or {}).get("server"),
        "tritonserver": study.facts.get("server_version"),
        "backend": backend,
        "settings": study.facts.get("measured_with"),
        "tensors": {k: study.facts["source"][k] for k in ("inputs", "outputs")},
    }


def _number(value: object) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _versions(study: StudyRecord) -> dict:
    packages = {}
    for name in ("triton-sweeper", "optuna", "onnxruntime", "onnxruntime-gpu", "onnx", "tritonclient"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {**packages, "tritonserver": study.facts.get("server_version"), "python": platform.python_version()}
