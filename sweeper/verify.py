"""``sweeper verify``: an export measured again on a fresh server, against the capacity it recorded.

The folder ``sweeper export`` wrote is served as it is (its config.pbtxt and model files, their
hashes checked against the record first), with the launcher, tritonserver options, load settings,
request data and load generator the study measured it with (``measured_by`` in
sweeper-export.json), and its capacity at the recorded budget is searched again from the load
it was found at. The verdict: it holds when the new figure is at least the recorded lowest less
the recorded spread (highest - lowest) less ``tolerance`` of the lowest; below that it regressed.
The folder is never changed: the server serves a copy.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

from pydantic import ValidationError
from tritonclient.grpc import model_config_pb2 as mc

from sweeper.data import DataError, Samples
from sweeper.errors import SweeperError, TrialError, UsageError
from sweeper.export import EXPORT_RECORD, file_hashes
from sweeper.fleet import sizing_capacity
from sweeper.launchers import LABEL_STUDY, LAUNCHERS, Launcher
from sweeper.load import CapacityTarget, LoadGenerator, Workload, choose_generator
from sweeper.measured import Capacity
from sweeper.repository import write_model
from sweeper.source import ModelSource, SourceError, from_repository
from sweeper.spec import ExampleInputsSpec, LoadSpec, ServerSpec, request_samples
from sweeper.tensors import TensorSpec
from sweeper.triton_config import copy_of, for_cpu, model_backend, serve_as
from sweeper.vocabulary import LoadSettings, Objective, Ranking, parse_capacity_column


@dataclasses.dataclass(frozen=True)
class Export:
    """An export folder as ``sweeper export`` wrote it, checked: its record and its model."""

    folder: Path
    record: dict
    source: ModelSource


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The capacity recorded at export against the one measured now."""

    column: str
    lowest: float
    highest: float
    median: float
    servers: int
    """How many fresh servers the recorded figures come from."""
    measured: float
    load: float
    """The load the new capacity was found at (concurrency, or requests/s)."""
    floor: float
    """The least the new figure may be: lowest - (highest - lowest) - tolerance * lowest."""
    tolerance: float
    notes: tuple[str, ...] = ()

    @property
    def holds(self) -> bool:
        """Whether the capacity held (exit 0) or regressed (exit 1)."""
        return self.measured >= self.floor

    def line(self) -> str:
        """recorded, measured, verdict: one line."""
        recorded = (
            f"recorded {self.lowest:,.0f}-{self.highest:,.0f}/s (median {self.median:,.0f}, {self.servers} servers)"
            if self.servers > 1
            else f"recorded {self.median:,.0f}/s (one server, no spread)"
        )
        if self.measured >= self.lowest:
            verdict = "holds: within or above the recorded range"
        elif self.holds:
            verdict = f"holds: below the recorded lowest by less than the band allows (floor {self.floor:,.0f}/s)"
        else:
            verdict = (
                f"REGRESSED: below the recorded lowest by more than the recorded spread"
                f"{f' and the tolerance of {self.tolerance:.0%}' if self.tolerance else ''} (floor {self.floor:,.0f}/s)"
            )
        return f"{self.column}: {recorded}, measured {self.measured:,.0f}/s: {verdict}"

    def as_dict(self) -> dict:
        """JSON-ready form, for ``--json``."""
        return {**dataclasses.asdict(self), "notes": list(self.notes), "holds": self.holds}


def band_floor(lowest: float, highest: float, tolerance: float) -> float:
    """The least a new capacity may measure and still hold: the recorded lowest less the recorded
    spread, less ``tolerance`` of the lowest."""
    return lowest - (highest - lowest) - tolerance * lowest


def read_export(path: Path) -> Export:
    """The export at ``path`` (the model folder, or the repository holding one); UsageError
    (exit 2) for a folder that is no export, or whose files changed since it was written."""
    folder = _model_folder(Path(path))
    record_path = folder / EXPORT_RECORD
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"{record_path}: not a readable export record: {str(exc)[:200]}") from None
    missing = (
        [key for key in ("files", "metrics", "spread", "ranked_by") if not record.get(key)]
        if isinstance(record, dict)
        else ["all"]
    )
    if missing:
        raise UsageError(
            f"{record_path}: the record lacks {', '.join(missing)}: written by an earlier sweeper, or edited",
            hint="export the study again with this sweeper (sweeper export RESULTS_DIR/STUDY --out DIR)",
        )
    _check_files(folder, record["files"])
    try:
        source = from_repository(folder, None)
    except SourceError as exc:
        raise UsageError(f"{folder}: {exc}") from None
    return Export(folder, record, source)


def _model_folder(path: Path) -> Path:
    if not path.is_dir():
        raise UsageError(f"{path}: no such folder", hint="give the folder sweeper export --out wrote")
    if (path / EXPORT_RECORD).is_file():
        return path
    found = sorted(child for child in path.iterdir() if (child / EXPORT_RECORD).is_file())
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} exported models ({', '.join(f.name for f in found)}): one"
        raise UsageError(
            f"{path} is not a sweeper export: {what} model folder with {EXPORT_RECORD}",
            hint="give the folder sweeper export --out wrote, or its model folder",
        )
    return found[0]


def _check_files(folder: Path, recorded: dict[str, str]) -> None:
    """Every file as the export wrote it: none changed, missing or added."""
    found = file_hashes(folder)
    changed = sorted(name for name in recorded if found.get(name) != recorded[name])
    added = sorted(set(found) - set(recorded))
    if changed or added:
        listed = ", ".join(
            [
                *(f"{n} ({'missing' if n not in found else 'changed'})" for n in changed),
                *(f"{n} (added)" for n in added),
            ]
        )
        raise UsageError(
            f"{folder}: the export's files differ from what it recorded: {listed[:400]}",
            hint="verify measures what was exported: export the study again, or verify the folder it wrote",
        )


def verify(export: Export, tolerance: float = 0.0) -> Verdict:
    """Serve ``export`` on a fresh server and search its capacity again; the verdict."""
    if not 0 <= tolerance < 1:
        raise UsageError(f"--tolerance must be a fraction in [0, 1) of the recorded lowest, got {tolerance:g}")
    record = export.record
    column = _verified_capacity(record)
    plan = _plan(export, column)
    found = _capacity_now(export, plan)
    low, high = (float(v) for v in record["spread"][column])
    return Verdict(
        column,
        low,
        high,
        float(record["metrics"][column]),
        int(record.get("measured", 1)),
        found.throughput,
        found.load,
        band_floor(low, high, tolerance),
        tolerance,
        plan.notes + ((found.note,) if found.note else ()),
    )


@dataclasses.dataclass(frozen=True)
class _Plan:
    """How the export is served and measured again, as the study did."""

    launcher: Launcher
    generator: LoadGenerator
    config: mc.ModelConfig
    workload: Workload
    settings: LoadSettings
    target: CapacityTarget
    notes: tuple[str, ...]


def _plan(export: Export, column: str) -> _Plan:
    """The recorded launcher, load settings, request data and generator; UsageError where the
    record does not describe them."""
    record, measured_by = export.record, export.record.get("measured_by") or {}
    measured_with = measured_by.get("settings")
    if not measured_with:
        raise UsageError(
            f"{export.folder / EXPORT_RECORD}: measured_by.settings is missing: the study was run by an earlier "
            "sweeper, which did not record its server and load settings",
            hint="run the study again with this sweeper, then export and verify it",
        )
    try:
        server_spec = ServerSpec.model_validate(measured_with["server"])
        load = LoadSpec.model_validate(measured_with["load"])
        examples = ExampleInputsSpec.model_validate(measured_with["example_inputs"])
        inputs, outputs = (_tensors(measured_by["tensors"][key]) for key in ("inputs", "outputs"))
    except (ValidationError, KeyError, TypeError) as exc:
        raise UsageError(f"{export.folder / EXPORT_RECORD}: measured_by is not valid: {str(exc)[:300]}") from None
    launcher = LAUNCHERS[server_spec.launcher].from_spec(server_spec)
    launcher.preflight()
    generator = choose_generator((record.get("generator") or {}).get("name", "auto"), load.perf_analyzer_setting)
    config, notes = _served_config(export, launcher)
    samples = _samples(inputs, measured_with.get("input_data"), examples)
    workload = Workload(config.name, inputs, outputs, samples, examples.batch_size, config.max_batch_size > 0)
    percentile, budget = parse_capacity_column(column)
    start = next((c["load"] for c in record.get("capacity", []) if c.get("column") == column), None)
    target = CapacityTarget(column, percentile, budget, start=start or None)
    settings = dataclasses.replace(load.settings, levels=load.settings.levels[:1])
    return _Plan(launcher, generator, config, workload, settings, target, notes)


def _capacity_now(export: Export, plan: _Plan) -> Capacity:
    """The capacity of a copy of the export, on a fresh server stopped before this returns."""
    config = plan.config
    with tempfile.TemporaryDirectory(prefix="sweeper-verify-") as work:
        repository = Path(work) / "repository"
        python = model_backend(config) == "python" and export.source.onnx_file is not None
        write_model(repository, export.source, config, export.source.onnx_file if python else None)
        try:
            with plan.launcher.start(
                repository,
                Path(work) / "server.log",
                {LABEL_STUDY: f"verify-{config.name}"},
                model_name=config.name,
                options=export.record.get("server_options") or (),
            ) as server:
                _, capacities = plan.generator.measure_trial(
                    server.endpoints, export.record["client_protocol"], plan.workload, plan.settings, [plan.target]
                )
        except TrialError as exc:
            raise SweeperError(f"the export did not serve or could not be measured: {exc}") from None
    return capacities[0]


def _verified_capacity(record: dict) -> str:
    ranked = record["ranked_by"]
    objectives = tuple(Objective(o["column"], o["direction"]) for o in ranked.get("objectives", []))
    try:
        column = sizing_capacity(Ranking(objectives, primary=ranked.get("primary")))
    except UsageError:
        raise UsageError(
            f"the export ranks by no capacity ({', '.join(o.column for o in objectives)}): verify measures "
            "capacity at the latency budget again",
            hint="export a study with a capacity objective (sweeper init --latency-budget MS writes one)",
        ) from None
    if column not in record["spread"] or column not in record["metrics"]:
        raise UsageError(f"the export's record has no figures for {column}", hint="export the study again")
    return column


def _served_config(export: Export, launcher: Launcher) -> tuple[mc.ModelConfig, tuple[str, ...]]:
    """The export's config; a config written for a GPU is served on a server without one as
    the study measured it (``for_cpu``), and an ONNX model whose backend the server lacks by the
    sweeper's python-backend model (each said in a note)."""
    template = export.source.template
    config, changes = (copy_of(template), ()) if launcher.has_gpu else for_cpu(template)
    notes = tuple(f"served on this host's CPU: {change}" for change in changes)
    backend = model_backend(config)
    if backend in launcher.backends:
        return config, notes
    if export.source.onnx_file is None or "python" not in launcher.backends:
        raise SweeperError(
            f"{launcher.describe()} has no {backend} backend (it has: {', '.join(sorted(launcher.backends))})",
            hint="verify where the study measured, or on NVIDIA's image (server.launcher docker)",
        )
    serve_as(config, "python", export.source.template)
    return config, (
        *notes,
        f"{launcher.describe()} has no {backend} backend: the model file served by the sweeper's "
        "python-backend model, as the study measured it",
    )


def _tensors(listed: list[dict]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec.from_dict(t) for t in listed)


def _samples(inputs: tuple[TensorSpec, ...], input_data: str | None, examples: ExampleInputsSpec) -> Samples:
    """The requests the study sent: its request data file, or its samples generated again."""
    try:
        return request_samples(list(inputs), Path(input_data) if input_data is not None else None, examples)
    except DataError as exc:
        raise UsageError(f"the export's request data: {exc}") from None
