"""A sweep as one library call: the spec's launcher, load generator, backend, storage and study
assembled, run, and closed.

``plan_sweep`` makes every decision that can refuse the spec (the results folder, the storage
URL, a stored study with other objectives, the load generator, the server and its backend)
without writing or starting anything, so a refusal (exit status 2) leaves the study folder as
it was. ``Sweep`` is the context manager that then owns the lock, the storage, the servers and
the tables; ``run_sweep`` runs one to the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import optuna
import sqlalchemy.exc

from sweeper.artifacts import PRECISIONS
from sweeper.confirm import confirm_study
from sweeper.errors import SpecError, SweeperError, UsageError
from sweeper.launchers import LABEL_STUDY, LAUNCHERS, Launcher
from sweeper.load import LoadGenerator, choose_generator
from sweeper.machine import fingerprint_difference, machine_fingerprint
from sweeper.record import (
    StudyRecord,
    kind_of,
    read_study,
    stored_ranking_conflict,
    study_fact,
    write_study_facts,
)
from sweeper.results import StudyTables, tables, write_tables
from sweeper.spec import LoadedSpec, Spec
from sweeper.storage import default_storage, exclusive_run, existing_study, open_storage, storage_label
from sweeper.study import TrialRunner, open_study, run_study

TrialCallback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


@dataclasses.dataclass(frozen=True)
class SweepPlan:
    """What a sweep will run, decided before anything is written or started."""

    loaded: LoadedSpec
    directory: Path
    storage_url: str
    launcher: Launcher
    generator: LoadGenerator
    backend: str

    @property
    def exclusive(self) -> bool:
        """Whether one sweeper owns the study (SQLite) rather than workers sharing it."""
        return self.storage_url.startswith("sqlite")


def plan_sweep(
    loaded: LoadedSpec,
    *,
    results_dir: Path = Path("results"),
    storage: str | None = None,
    allow_other_machine: bool = False,
) -> SweepPlan:
    """Every check that can refuse the sweep, in order of cost; nothing is written or started
    (a perf_analyzer is probed, a Docker image may be pulled). A stored study measured on
    another machine (``sweeper.machine.fingerprint_difference``) is refused unless
    ``allow_other_machine``. Raises SpecError / UsageError (exit 2) or SweeperError (exit 1)."""
    results_dir = Path(results_dir)
    check_results_dir(results_dir)
    directory = results_dir / loaded.name
    storage_url = storage or loaded.spec.study.storage or default_storage(directory.resolve())
    storage_label(storage_url)  # a malformed URL is bad input
    _check_stored_study(loaded, storage_url)
    launcher = LAUNCHERS[loaded.spec.server.launcher].from_spec(loaded.spec.server)
    generator = choose_generator(loaded.spec.load.generator, loaded.spec.load.perf_analyzer_setting)
    launcher.preflight()
    loaded = _for_this_host(loaded, launcher)
    backend = choose_backend(loaded, launcher)
    _check_measurable(loaded, launcher)
    plan = SweepPlan(loaded, directory, storage_url, launcher, generator, backend)
    if not allow_other_machine:
        _check_same_machine(plan)
    return plan


def measured_with(spec: Spec) -> dict:
    """The spec's blocks that say how a trial is served and measured (the server, the load, the
    request data), JSON-ready: an export records them for ``sweeper verify``."""
    model = spec.model
    return {
        "server": spec.server.model_dump(mode="json"),
        "load": spec.load.model_dump(mode="json"),
        "input_data": str(model.input_data) if model.input_data is not None else None,
        "example_inputs": model.example_inputs.model_dump(mode="json"),
    }


def study_fingerprint(plan: SweepPlan) -> dict:
    """What the study's figures are measured on: this machine, the server and the load generator."""
    return {**machine_fingerprint(), "server": plan.launcher.describe(), "generator": plan.generator.name}


def _check_same_machine(plan: SweepPlan) -> None:
    """A worker joins (or resumes) a study only where its figures compare with the study's."""
    stored = existing_study(plan.storage_url, plan.loaded.name)
    recorded = study_fact(stored, "fingerprint") if stored is not None else None
    if not recorded:
        return
    difference = fingerprint_difference(recorded, study_fingerprint(plan))
    if difference is not None:
        raise UsageError(
            f"study '{plan.loaded.name}' was measured on another machine ({difference}); its figures and "
            "this machine's do not compare",
            hint="use another study name, or --allow-other-machine to join it anyway (the report lists each machine)",
        )


def check_results_dir(results_dir: Path) -> None:
    """Refuse a results folder that cannot hold the study, before anything is written."""
    existing = results_dir
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"--results-dir {results_dir}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(
            f"--results-dir {results_dir}: {existing} is not writable",
            hint="choose a folder you can write to with --results-dir",
        )


def _check_stored_study(loaded: LoadedSpec, storage_url: str) -> None:
    """A stored study of this name must rank by the spec's objectives (a resume); read only."""
    stored = existing_study(storage_url, loaded.name)
    if stored is None:
        return
    conflict = stored_ranking_conflict(stored, loaded.ranking)
    if conflict is not None:
        raise SpecError(
            f"{loaded.path}: objectives: the stored study '{loaded.name}' does not match: {conflict}",
            hint="use another study.name (or --study) for a different set of objectives; "
            "'sweeper report --objective' re-ranks a finished study without measuring",
        )


def _check_measurable(loaded: LoadedSpec, launcher: Launcher) -> None:
    """A metric the server cannot report (GPU memory without a GPU) is refused, not left blank."""
    for key, entries in (("objectives", loaded.spec.objectives), ("constraints", loaded.spec.constraints)):
        for index, entry in enumerate(entries):
            if entry.metric == "gpu_memory_mb" and not launcher.has_gpu:
                raise SpecError(
                    f"{loaded.path}: {key}.{index}.metric: gpu_memory_mb needs a GPU; {launcher.describe()} has none",
                    hint="use server_memory_mb (the server's resident memory), or server.docker.gpus on a GPU host",
                )


def _for_this_host(loaded: LoadedSpec, launcher: Launcher) -> LoadedSpec:
    """A model config written for a GPU, on a server without one: measured on the CPU with each
    change said (``ModelSource.for_cpu``), or refused with ``server.keep_gpu``."""
    if launcher.has_gpu:
        return loaded
    model = loaded.model.for_cpu()
    if not model.host_changes:
        return loaded
    if loaded.spec.server.keep_gpu:
        raise SpecError(
            f"{loaded.path}: server.keep_gpu: the model's config asks for a GPU ({'; '.join(model.host_changes)}) "
            f"and {launcher.describe()} has none",
            hint="run on a GPU host, or set server.keep_gpu: false to measure the config on this host's CPU",
        )
    return dataclasses.replace(loaded, model=model)


def choose_backend(loaded: LoadedSpec, launcher: Launcher) -> str:
    """The backend that serves the model, or SpecError when the launcher's server lacks it."""
    source, wanted = loaded.model, loaded.spec.server.backend
    available = launcher.backends
    if source.onnx_file is None:  # a folder of another format: its own backend, nothing else
        needed = source.backend
        if needed not in available:
            raise SpecError(
                f"{loaded.path}: model.source.repository: the model needs Triton's {needed} backend, which "
                f"{launcher.describe()} lacks (it has: {', '.join(sorted(available)) or 'none'})",
                hint=f"use server.launcher: docker with NVIDIA's image (nvcr.io/nvidia/tritonserver:<yy.mm>-py3), "
                f"which has the {needed} backend, or a server.tritonserver built with it",
            )
        return needed
    backend = wanted
    if wanted == "auto":
        backend = "onnxruntime" if "onnxruntime" in available else "python"
    if backend not in available:
        raise SpecError(
            f"{loaded.path}: server.backend: {backend} is not among the backends of {launcher.describe()} "
            f"({', '.join(sorted(available)) or 'none'})",
            hint="use backend: auto, or a Triton build with the onnxruntime backend (NVIDIA's image)",
        )
    tensorrt = sorted(p for p in loaded.space["precision"] if PRECISIONS[p].tensorrt)
    if tensorrt and (backend != "onnxruntime" or not launcher.has_gpu):
        raise SweeperError(
            f"search_space.precision {tensorrt} needs Triton's onnxruntime backend on a GPU "
            f"(this server: {backend} backend, {'a' if launcher.has_gpu else 'no'} GPU)",
            hint="use NVIDIA's Triton image with server.docker.gpus, or drop the _trt precisions",
        )
    return backend


class Sweep:
    """A planned sweep, running: entering takes the study's lock, removes what a crashed earlier
    run left, opens the storage and the study and builds the reference model; leaving stops
    every server and writes the tables (also after Ctrl-C or a failure), then lets go of the lock.

        with Sweep(plan_sweep(loaded)) as sweep:
            outcome = sweep.run()
    """

    def __init__(self, plan: SweepPlan) -> None:
        self.plan = plan
        self.removed_leftovers = 0
        self.study: optuna.Study | None = None
        self._runner: TrialRunner | None = None
        self._resources = contextlib.ExitStack()
        self.tables: StudyTables | None = None
        """The tables as last written (after each trial, and on the way out if a trial changed since)."""
        self._record: StudyRecord | None = None
        self._written_at: list[tuple[int, str]] = []

    def __enter__(self) -> Sweep:
        plan = self.plan
        plan.directory.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as entering:  # what entering took is let go if it fails
            entering.enter_context(exclusive_run(plan.storage_url, plan.loaded.name))
            entering.push(self._write_tables_on_exit)  # after the servers stop (last in, first out)
            self.removed_leftovers = plan.launcher.remove_leftovers({LABEL_STUDY: plan.loaded.name})
            self._storage = open_storage(plan.storage_url, plan.loaded.spec.study.heartbeat_s)
            self._runner = TrialRunner(plan.loaded, plan.launcher, plan.directory, plan.backend, plan.generator)
            entering.callback(self._runner.servers.close)
            self._runner.prepare()
            self.study = open_study(plan.loaded, self._storage)
            write_study_facts(self.study, plan.loaded.ranking, self._facts())
            self._resources = entering.pop_all()
        return self

    def _facts(self) -> dict:
        plan = self.plan
        return {
            "backend": plan.backend,
            "gpu": plan.launcher.has_gpu,
            "launcher": plan.loaded.spec.server.launcher,
            "model": plan.loaded.model.name,
            "source": plan.loaded.model.facts(),
            "spec": str(plan.loaded.path),
            "generator": plan.generator.name,
            "fingerprint": self._stored_fingerprint(),
            "confirm_repeats": plan.loaded.spec.study.confirm_repeats,
            "in_process": self._in_process(),
            "measured_with": measured_with(plan.loaded.spec),
            "accuracy": plan.loaded.spec.accuracy.model_dump(mode="json"),
        }

    def _in_process(self) -> dict | None:
        """The reference timed in-process once, when the study is first prepared (a resume keeps it)."""
        stored = study_fact(self.study, "in_process") if self.study is not None else None
        if stored is not None:
            return stored
        timing = self._runner.time_reference()
        return dataclasses.asdict(timing) if timing is not None else None

    def _stored_fingerprint(self) -> dict:
        """The study's fingerprint: the first machine's (a worker allowed to join keeps it)."""
        stored = study_fact(self.study, "fingerprint") if self.study is not None else None
        return stored or study_fingerprint(self.plan)

    def run(self, on_trial_end: TrialCallback | None = None) -> str:
        """Run trials until the study has ``study.trials`` counted ones; ``done``, or
        ``exhausted`` when every configuration of the space is taken. ``on_trial_end`` is called
        after each trial, with the tables already rewritten."""

        def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            if kind_of(trial) != "duplicate":  # a redrawn proposal changes no table
                self._write_tables()
            if on_trial_end is not None:
                on_trial_end(study, trial)

        _, outcome = run_study(
            self.study,
            self.plan.loaded,
            self._runner,
            self._storage,
            exclusive=self.plan.exclusive,
            on_trial_end=after_trial,
        )
        confirm_study(self.study, self.plan.loaded, self._runner, self._storage, on_trial_end=after_trial)
        return outcome

    def record(self) -> StudyRecord:
        """The study's records as the tables last written show them (read now when none were)."""
        return self._record if self._record is not None else read_study(self.study)

    def _write_tables(self) -> None:
        """Read the study once, build its tables once, write them: the snapshot the printout, the
        files and the report share."""
        self._record = read_study(self.study)
        self._written_at = _states(self.study)
        self.tables = tables(self._record)
        write_tables(self.tables, self.plan.directory)

    def _write_tables_on_exit(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> bool:
        """The tables on the way out, once there is a study; a failure to write them is reported
        unless another error stopped the run (that one is the one to report)."""
        if self.study is not None and (self.tables is None or _states(self.study) != self._written_at):
            try:
                self._write_tables()
            except (OSError, sqlalchemy.exc.SQLAlchemyError):
                if exc is None:
                    raise
        return False

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        """Stop every server, write the tables, let go of the lock (in that order)."""
        self._resources.__exit__(exc_type, exc, traceback)


def _states(study: optuna.Study) -> list[tuple[int, str]]:
    """Each trial's number and state: what the tables were written from changes with them."""
    return [(t.number, t.state.name) for t in study.get_trials(deepcopy=False)]


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """A finished sweep: why it stopped, its records and tables, and where they are."""

    outcome: str
    record: StudyRecord
    tables: StudyTables
    directory: Path


def run_sweep(
    loaded: LoadedSpec,
    *,
    results_dir: Path = Path("results"),
    storage: str | None = None,
    on_trial_end: TrialCallback | None = None,
) -> SweepResult:
    """Plan, run and close a sweep of ``loaded``; the tables are written, not the report."""
    with Sweep(plan_sweep(loaded, results_dir=results_dir, storage=storage)) as sweep:
        outcome = sweep.run(on_trial_end)
    return SweepResult(outcome, sweep.record(), sweep.tables, sweep.plan.directory)
