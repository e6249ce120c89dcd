"""Stage 6: the Optuna study. Each trial builds, starts, measures and stops one configuration."""

from __future__ import annotations

import contextlib
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator

import onnx
import optuna
import sqlalchemy

from sweeper.artifacts import ArtifactBuilder
from sweeper.errors import SpecError, SweeperError, TrialError, UsageError
from sweeper.launchers import Launcher, failure_reason, server_metadata
from sweeper.load import by_column, measure, served_outputs
from sweeper.repository import write_model_repository
from sweeper.spec import KNOBS, TENSORRT_PRECISIONS, LoadedSpec, TrialConfig
from sweeper.tensors import TensorSpec, onnx_io
from sweeper.triton_config import build_model_config, to_pbtxt

LABEL_STUDY = "triton-sweeper.study"
LABEL_TRIAL = "triton-sweeper.trial"
TIMINGS = ("build_s", "start_s", "measure_s", "stop_s")


def study_dir(results_dir: Path, name: str) -> Path:
    return Path(results_dir) / name


def default_storage(directory: Path) -> str:
    return f"sqlite:///{directory / 'study.db'}"


def open_stored_study(directory: Path, storage: str | None = None) -> optuna.Study:
    """The study kept in a results folder (its study.db), for report and export."""
    directory = Path(directory)
    if storage is None:
        if not (directory / "study.db").is_file():
            what = "no study.db in" if directory.is_dir() else "no such study folder:"
            raise UsageError(f"{what} {directory}", hint="give RESULTS_DIR/STUDY as written by 'sweeper run'")
        storage = default_storage(directory)
    opened = open_storage(storage)
    names = optuna.get_all_study_names(opened)
    name = directory.name if directory.name in names or len(names) != 1 else names[0]
    try:
        return optuna.load_study(study_name=name, storage=opened)
    except KeyError:
        raise UsageError(f"no study '{name}' in {opened.url}", hint=f"studies there: {', '.join(names) or 'none'}") from None


def storage_label(url: str) -> str:
    """The storage URL with its password hidden; UsageError when it is not a database URL."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        raise UsageError(
            f"--storage / study.storage: not a database URL: {url!r}",
            hint="e.g. sqlite:///path/study.db or postgresql://user@host/db",
        ) from None


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's storage for ``url``; its errors become one line (password hidden) and a hint."""
    shown = storage_label(url)
    try:
        return optuna.storages.RDBStorage(url)
    except ImportError:
        raise SweeperError(
            f"storage {shown}: the database driver is not installed",
            hint="pip install 'psycopg[binary]' for postgresql://, or name the driver: postgresql+psycopg2://",
        ) from None
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise SweeperError(
            f"storage {shown}: {str(exc.orig if getattr(exc, 'orig', None) else exc).splitlines()[0]}",
            hint="check that the database server runs, is reachable and the database exists",
        ) from None


def stored_model_io(study: optuna.Study, model: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """A study's model I/O: the graph's, with the inputs the spec gave (stored on the study)."""
    inputs, outputs = onnx_io(onnx.load(str(model), load_external_data=False))
    given = study.user_attrs.get("inputs") or []
    if given:
        inputs = [TensorSpec(i["name"], i["datatype"], tuple(i["shape"])) for i in given]
    return inputs, outputs


def make_sampler(loaded: LoadedSpec) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _sampler(loaded)


def _sampler(loaded: LoadedSpec) -> optuna.samplers.BaseSampler:
    spec = loaded.spec
    seed = spec.study.seed
    if spec.study.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if spec.study.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if spec.study.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.study.sampler == "grid":
        # Every combination once. Unlike GridSampler, BruteForceSampler counts the enqueued
        # baseline as visited, so the baseline's point is not measured twice.
        return optuna.samplers.BruteForceSampler(seed=seed)
    try:
        import scipy  # noqa: F401  (GPSampler needs scipy and torch)
        import torch  # noqa: F401
    except ImportError as exc:
        raise SpecError(
            f"{loaded.path}: study.sampler: 'gp' needs {exc.name}, which is not installed",
            hint="pip install scipy torch, or choose tpe, nsga2, random or grid",
        ) from None
    return optuna.samplers.GPSampler(seed=seed)


def open_study(loaded: LoadedSpec, storage: optuna.storages.RDBStorage) -> optuna.Study:
    """Create the study, or load it when the name exists (a re-run resumes it)."""
    directions = [objective.direction for objective in loaded.spec.objectives]
    sampler = make_sampler(loaded)
    try:
        study = optuna.create_study(
            study_name=loaded.name,
            storage=storage,
            directions=directions,
            sampler=sampler,
            load_if_exists=True,
        )
    except ValueError as exc:
        raise SpecError(
            f"{loaded.path}: objectives: the stored study '{loaded.name}' does not match: {exc}",
            hint="use another study.name (or --study) for a different set of objectives",
        ) from None
    if list(study.directions) != [optuna.study.StudyDirection[d.upper()] for d in directions]:
        raise SpecError(
            f"{loaded.path}: objectives: the stored study '{loaded.name}' has other directions",
            hint="use another study.name (or --study) for a different set of objectives",
        )
    if storage.url.startswith("sqlite:"):
        # SQLite serves one process: a trial still RUNNING was left by a run that was killed
        # (SIGKILL, power loss). Shared storages may have live workers, so only here.
        stale = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        if stale:
            # Told through a plain view of the study: the sampler's hooks belong to optimize().
            plain = optuna.load_study(study_name=loaded.name, storage=storage, sampler=optuna.samplers.RandomSampler())
            for trial in stale:
                plain.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    if loaded.baseline is not None and not _baseline_pending_or_done(study):
        study.enqueue_trial(loaded.baseline.as_dict(), user_attrs={"baseline": True})
    study.set_user_attr("objectives", [o.column for o in loaded.spec.objectives])
    return study


def _baseline_pending_or_done(study: optuna.Study) -> bool:
    """Whether the baseline was measured, is being measured (by another worker of a shared
    study) or waits its turn; a failed one is tried again."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
    return any(t.user_attrs.get("baseline") for t in study.get_trials(deepcopy=False, states=states))


@contextlib.contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = round(time.perf_counter() - start, 4)


class TrialRunner:
    """The objective: one fresh server per trial, every metric stored on the trial."""

    def __init__(self, loaded: LoadedSpec, launcher: Launcher, directory: Path, backend: str) -> None:
        self._loaded = loaded
        self._spec = loaded.spec
        self._launcher = launcher
        self._dir = directory
        self._backend = backend
        self._gpu = launcher.has_gpu
        self.artifacts = ArtifactBuilder(loaded, directory / "models", gpu=self._gpu)

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        space = self._spec.search_space
        config = TrialConfig(**{knob: trial.suggest_categorical(knob, getattr(space, knob)) for knob in KNOBS})
        previous = self._measured_before(trial)
        if previous is not None:
            return self._reuse(trial, previous)
        trial_dir = self._dir / "trials" / str(trial.number)
        timings: dict[str, float] = {}
        try:
            measurements = self._run(trial, config, trial_dir, timings)
        except TrialError as exc:
            trial.set_user_attr("failure", str(exc))
            raise
        finally:
            trial.set_user_attr("timings", timings)
        trial.set_user_attr("measurements", measurements)
        figures = by_column(measurements)
        for constraint in self._spec.constraints:
            value = figures[constraint.column]
            if constraint.max is not None:
                trial.set_constraint(f"{constraint.column}<={constraint.max:g}", value - constraint.max)
            else:
                trial.set_constraint(f"{constraint.column}>={constraint.min:g}", constraint.min - value)
        return tuple(figures[objective.column] for objective in self._spec.objectives)

    def _record_accuracy(self, trial: optuna.Trial, precision: str, error: float, cosine: float) -> None:
        """Accuracy against FP32 as user attributes and as constraints (<= 0 is feasible)."""
        trial.set_user_attr("max_abs_error", error)
        trial.set_user_attr("cosine_similarity", cosine)
        accuracy = self._spec.accuracy
        trial.set_constraint("cosine_similarity", accuracy.min_cosine_similarity - cosine)
        if accuracy.max_abs_error is not None:
            trial.set_constraint("max_abs_error", error - accuracy.max_abs_error)
        failure = self.artifacts.outside_tolerance(precision, error, cosine)
        if failure is not None:
            trial.set_user_attr("infeasible", failure)

    @staticmethod
    def _measured_before(trial: optuna.Trial) -> optuna.trial.FrozenTrial | None:
        """A finished trial with the same five knobs (samplers can propose a point again)."""
        complete = trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        return next((t for t in complete if t.params == trial.params), None)

    @staticmethod
    def _reuse(trial: optuna.Trial, previous: optuna.trial.FrozenTrial) -> tuple[float, ...]:
        """Record the earlier trial's figures instead of measuring the same configuration again."""
        for key, value in previous.user_attrs.items():
            if key not in ("baseline", "timings"):
                trial.set_user_attr(key, value)
        trial.set_user_attr("duplicate_of", previous.number)
        for key, value in previous.constraints.items():
            trial.set_constraint(key, value)
        return tuple(previous.values)

    def _run(self, trial: optuna.Trial, config: TrialConfig, trial_dir: Path, timings: dict[str, float]) -> list[dict]:
        model_name = self._spec.model.name
        with _timed(timings, "build_s"):
            artifact = self.artifacts.build(config.precision)
            model = build_model_config(
                model_name,
                list(artifact.inputs),
                list(artifact.outputs),
                config,
                backend=self._backend,
                gpu=self._gpu,
                tensorrt_precision=TENSORRT_PRECISIONS.get(config.precision),
            )
            repository = write_model_repository(trial_dir / "repository", model, artifact.path)
            (trial_dir / "config.pbtxt").write_text(to_pbtxt(model))
        if artifact.cosine_similarity is not None:
            self._record_accuracy(trial, config.precision, artifact.max_abs_error, artifact.cosine_similarity)

        data = self._spec.model.example_inputs
        inputs = self.artifacts.sample_inputs(artifact.inputs, data.batch_size, data.seed)
        outputs = [tensor.name for tensor in artifact.outputs]
        labels = {LABEL_STUDY: self._loaded.name, LABEL_TRIAL: str(trial.number)}
        log_path = trial_dir / "server.log"
        with _timed(timings, "start_s"):
            server = self._launcher.start(repository, model_name, log_path, labels)
        with server:
            if "server_version" not in trial.study.user_attrs:
                trial.study.set_user_attr("server_version", server_metadata(server.endpoints).get("version"))
            try:
                if artifact.cosine_similarity is None:  # TensorRT: only the server knows its numbers
                    produced = served_outputs(server.endpoints, model_name, self.artifacts.accuracy_sample(),
                                              outputs, config.max_batch_size)
                    self._record_accuracy(trial, config.precision, *self.artifacts.compare(produced))
                with _timed(timings, "measure_s"):
                    results = [
                        measure(server.endpoints, config.protocol, model_name, inputs, outputs, level, self._spec.load)
                        for level in self._spec.load.concurrency
                    ]
            except TrialError as exc:
                if not server.alive():
                    raise TrialError(f"{exc}; the server died: {failure_reason(log_path.read_text())}") from None
                raise
            with _timed(timings, "stop_s"):
                server.stop()
        return [result.as_dict() for result in results]


def choose_backend(loaded: LoadedSpec, launcher: Launcher) -> str:
    wanted = loaded.spec.server.backend
    backend = wanted
    if wanted == "auto":
        backend = "onnxruntime" if launcher.has_onnxruntime_backend else "python"
    elif wanted == "onnxruntime" and not launcher.has_onnxruntime_backend:
        raise SweeperError(
            "server.backend is onnxruntime but this server has no onnxruntime backend",
            hint="use backend: python (ONNX Runtime inside Triton's python backend) or a Triton build with it",
        )
    tensorrt = sorted(set(loaded.spec.search_space.precision) & set(TENSORRT_PRECISIONS))
    if tensorrt and (backend != "onnxruntime" or not launcher.has_gpu):
        raise SweeperError(
            f"search_space.precision {tensorrt} needs Triton's onnxruntime backend on a GPU "
            f"(this server: {backend} backend, {'a' if launcher.has_gpu else 'no'} GPU)",
            hint="use NVIDIA's Triton image with server.docker.gpus, or drop the _trt precisions",
        )
    return backend


def run_study(
    loaded: LoadedSpec,
    launcher: Launcher,
    directory: Path,
    storage: optuna.storages.RDBStorage,
    on_trial_end: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
) -> optuna.Study:
    """Run the trials that the study still lacks (``study.trials`` counts finished ones).

    The launcher must have passed ``preflight`` (the CLI also removes leftovers first)."""
    backend = choose_backend(loaded, launcher)
    study = open_study(loaded, storage)
    for key, value in {
        "backend": backend,
        "gpu": launcher.has_gpu,
        "launcher": loaded.spec.server.launcher,
        "model": loaded.spec.model.name,
        "spec": str(loaded.path),
        # What the report needs to time the model in-process with the same kind of data.
        "inputs": [i.model_dump() for i in loaded.spec.model.inputs or []],
        "input_range": [loaded.spec.model.example_inputs.low, loaded.spec.model.example_inputs.high],
    }.items():
        study.set_user_attr(key, value)
    finished = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL
    remaining = loaded.spec.study.trials - len(study.get_trials(deepcopy=False, states=finished))
    if remaining <= 0:
        return study
    runner = TrialRunner(loaded, launcher, directory, backend)
    # With a shared storage other workers add trials too: stop when the study has them all.
    callbacks = [optuna.study.MaxTrialsCallback(loaded.spec.study.trials, states=finished)]
    if on_trial_end is not None:
        callbacks.append(on_trial_end)
    study.optimize(runner, n_trials=remaining, catch=(TrialError,), callbacks=callbacks, gc_after_trial=False)
    return study
