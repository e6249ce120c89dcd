"""Stage 1: the YAML spec, validated whole before anything starts.

The pydantic models below are the user-facing contract documented in README.md.
``load_spec`` turns every problem (YAML syntax, unknown key, wrong type, missing file,
unimportable factory) into one ``SpecError`` naming the file, the key path and what is
allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import sys
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sweeper.errors import SpecError

Metric = Literal["p50_ms", "p90_ms", "p95_ms", "p99_ms", "throughput"]
METRICS: tuple[str, ...] = typing.get_args(Metric)
Protocol = Literal["http", "grpc"]
# fp16_trt / int8_trt: ONNX Runtime's TensorRT execution provider inside Triton's onnxruntime
# backend builds the engine in that precision on the GPU (config.pbtxt execution_accelerators).
Precision = Literal["fp32", "fp16", "int8", "fp16_trt", "int8_trt"]
TENSORRT_PRECISIONS = {"fp16_trt": "FP16", "int8_trt": "INT8"}
Datatype = Literal["FP32", "FP16", "FP64", "INT64", "INT32", "INT16", "INT8", "UINT8", "BOOL"]
KNOBS = ("max_batch_size", "max_queue_delay_us", "instance_count", "protocol", "precision")


@dataclasses.dataclass(frozen=True)
class TrialConfig:
    """One point of the search space: the five knobs of a trial."""

    max_batch_size: int
    max_queue_delay_us: int
    instance_count: int
    protocol: str
    precision: str

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StudySpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    trials: int = Field(default=20, ge=1)
    sampler: Literal["tpe", "nsga2", "gp", "random", "grid"] = "tpe"
    seed: int | None = 0
    storage: str | None = None


class SourceSpec(_Strict):
    onnx: Path | None = None
    pytorch: str | None = Field(default=None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

    @model_validator(mode="after")
    def _exactly_one(self) -> SourceSpec:
        if (self.onnx is None) == (self.pytorch is None):
            raise ValueError("give exactly one of 'onnx: PATH' or 'pytorch: \"module.path:factory\"'")
        return self


class InputSpec(_Strict):
    name: str = Field(min_length=1)
    datatype: Datatype
    shape: list[int] = Field(description="per-sample shape, without the batch axis")

    @model_validator(mode="after")
    def _positive_dims(self) -> InputSpec:
        if any(d < 1 for d in self.shape):
            raise ValueError(f"shape dimensions must be positive integers, got {self.shape}")
        return self


class ExampleInputsSpec(_Strict):
    batch_size: int = Field(default=1, ge=1, description="samples per request")
    low: float = 0.0
    high: float = 1.0
    seed: int = 0
    samples: int = Field(default=8, ge=1, description="batch used by the accuracy check")

    @model_validator(mode="after")
    def _range(self) -> ExampleInputsSpec:
        if self.high <= self.low:
            raise ValueError(f"high ({self.high}) must be greater than low ({self.low})")
        return self


class ModelSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    source: SourceSpec
    inputs: list[InputSpec] | None = Field(default=None, min_length=1)
    example_inputs: ExampleInputsSpec = ExampleInputsSpec()


class DockerSpec(_Strict):
    image: str = "nvcr.io/nvidia/tritonserver:24.10-py3"
    gpus: Literal["all", "none"] | list[int] = "none"
    shm_size: str = "1g"
    # NVIDIA's recommended limits for Triton (docker run --ulimit memlock=-1 --ulimit stack=67108864);
    # -1 is unlimited. A host whose own hard limit is lower needs a value within it.
    ulimits: dict[str, int] = Field(default_factory=lambda: {"memlock": -1, "stack": 67108864})
    volumes: dict[str, str] = Field(default_factory=dict, description="host path -> container path (read-only)")
    env: dict[str, str] = Field(default_factory=dict)
    network: Literal["host", "published"] = "published"
    bridge: str | None = Field(default=None, description="Docker network for 'published'; default the engine's bridge")
    pull: Literal["never", "missing", "always"] = "missing"
    tritonserver: str = "tritonserver"
    backend_directory: str | None = None
    base_url: str | None = Field(default=None, description="Docker engine URL; default from DOCKER_HOST")


class ServerSpec(_Strict):
    launcher: Literal["local", "docker"] = "local"
    tritonserver: Path | None = None
    backend_directory: Path | None = None
    backend: Literal["auto", "onnxruntime", "python"] = "auto"
    address: str = "127.0.0.1"
    startup_timeout_s: float = Field(default=120.0, gt=0)
    docker: DockerSpec | None = None

    @model_validator(mode="after")
    def _docker_block(self) -> ServerSpec:
        if self.docker is not None and self.launcher != "docker":
            raise ValueError("a 'docker' block needs 'launcher: docker'")
        return self


class SearchSpaceSpec(_Strict):
    max_batch_size: list[typing.Annotated[int, Field(ge=1)]] = Field(min_length=1)
    max_queue_delay_us: list[typing.Annotated[int, Field(ge=0)]] = Field(min_length=1)
    instance_count: list[typing.Annotated[int, Field(ge=1)]] = Field(min_length=1)
    protocol: list[Protocol] = Field(min_length=1)
    precision: list[Precision] = Field(min_length=1)

    @model_validator(mode="after")
    def _no_repeats(self) -> SearchSpaceSpec:
        for knob in KNOBS:
            values = getattr(self, knob)
            if len(set(values)) != len(values):
                raise ValueError(f"{knob} lists a value twice: {values}")
        return self


class BaselineSpec(_Strict):
    """The configuration the team runs today; ``config_pbtxt`` supplies the three server knobs."""

    config_pbtxt: Path | None = None
    max_batch_size: int | None = Field(default=None, ge=1)
    max_queue_delay_us: int | None = Field(default=None, ge=0)
    instance_count: int | None = Field(default=None, ge=1)
    protocol: Protocol
    precision: Precision = "fp32"

    @model_validator(mode="after")
    def _complete(self) -> BaselineSpec:
        server_knobs = (self.max_batch_size, self.max_queue_delay_us, self.instance_count)
        if self.config_pbtxt is None and None in server_knobs:
            raise ValueError(
                "give max_batch_size, max_queue_delay_us and instance_count, or config_pbtxt: PATH"
            )
        if self.config_pbtxt is not None and any(v is not None for v in server_knobs):
            raise ValueError("give either config_pbtxt or the three server knobs, not both")
        return self


class LoadSpec(_Strict):
    concurrency: list[typing.Annotated[int, Field(ge=1)]] = Field(default=[1], min_length=1)
    warmup_s: float = Field(default=2.0, ge=0)
    window_s: float = Field(default=2.0, gt=0)
    stability_tolerance: float = Field(default=0.1, gt=0, le=1)
    max_windows: int = Field(default=8, ge=3)
    request_timeout_s: float = Field(default=60.0, gt=0)


class ObjectiveSpec(_Strict):
    metric: Metric
    concurrency: int = Field(ge=1)
    direction: Literal["minimize", "maximize"]

    @property
    def column(self) -> str:
        return f"{self.metric}@c{self.concurrency}"


class ConstraintSpec(_Strict):
    metric: Metric
    concurrency: int = Field(ge=1)
    max: float | None = None
    min: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> ConstraintSpec:
        if (self.max is None) == (self.min is None):
            raise ValueError("give exactly one of 'max' or 'min'")
        return self

    @property
    def column(self) -> str:
        return f"{self.metric}@c{self.concurrency}"


class AccuracySpec(_Strict):
    """How far FP16/INT8 outputs may drift from FP32 on the generated sample inputs."""

    min_cosine_similarity: float = Field(default=0.999, ge=-1, le=1)
    max_abs_error: float | None = Field(default=None, gt=0)


class Spec(_Strict):
    study: StudySpec
    model: ModelSpec
    server: ServerSpec = ServerSpec()
    search_space: SearchSpaceSpec
    baseline: BaselineSpec | None = None
    load: LoadSpec = LoadSpec()
    objectives: list[ObjectiveSpec] = Field(min_length=1)
    constraints: list[ConstraintSpec] = Field(default_factory=list)
    accuracy: AccuracySpec = AccuracySpec()

    @model_validator(mode="after")
    def _cross_checks(self) -> Spec:
        levels = set(self.load.concurrency)
        for key, entries in (("objectives", self.objectives), ("constraints", self.constraints)):
            for entry in entries:
                if entry.concurrency not in levels:
                    raise ValueError(
                        f"{key}: {entry.column} measures at concurrency {entry.concurrency}, "
                        f"which load.concurrency {sorted(levels)} does not include"
                    )
        columns = [o.column for o in self.objectives]
        if len(set(columns)) != len(columns):
            raise ValueError(f"objectives repeat a metric: {columns}")
        tensorrt = sorted(set(self.search_space.precision) & set(TENSORRT_PRECISIONS))
        if tensorrt and self.server.backend == "python":
            raise ValueError(
                f"search_space.precision {tensorrt} runs TensorRT inside Triton's onnxruntime backend; "
                "server.backend must be auto or onnxruntime"
            )
        if self.model.source.pytorch is not None and self.model.inputs is None:
            raise ValueError("model.inputs is required for a pytorch source (name, datatype, shape)")
        return self


@dataclasses.dataclass(frozen=True)
class LoadedSpec:
    """A validated spec plus what was resolved from disk (absolute paths, baseline knobs)."""

    spec: Spec
    path: Path
    baseline: TrialConfig | None

    @property
    def name(self) -> str:
        return self.spec.study.name


def load_spec(path: Path, *, study_name: str | None = None, trials: int | None = None) -> LoadedSpec:
    """Read, validate and resolve a spec file; raise ``SpecError`` on any problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the spec: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"{path}{line}: the YAML does not parse: {problem}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: the spec must be a YAML mapping with keys {_allowed(Spec)}")
    if study_name is not None:
        raw.setdefault("study", {})
        if isinstance(raw["study"], dict):
            raw["study"]["name"] = study_name
    if trials is not None:
        if trials < 1:
            raise SpecError(f"--trials must be at least 1, got {trials}")
        if isinstance(raw.get("study"), dict):
            raw["study"]["trials"] = trials
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_describe(path, exc)) from None
    spec = _resolve_paths(spec, path.parent.resolve())
    _check_files(spec, path)
    return LoadedSpec(spec=spec, path=path.resolve(), baseline=_baseline(spec, path))


def _allowed(model: type[BaseModel]) -> str:
    return ", ".join(model.model_fields)


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the key at ``loc`` (for listing the allowed keys)."""
    model: Any = Spec
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if isinstance(model, type) else None
        if field is None:
            return None
        model = _inner_model(field.annotation)
        if model is None:
            return None
    return model


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _describe(path: Path, exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        if error["type"] == "extra_forbidden":
            owner = _model_at(loc[:-1])
            allowed = list(owner.model_fields) if owner else []
            guess = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f"; did you mean '{guess[0]}'?" if guess else ""
            lines.append(f"{key}: unknown key{hint} Allowed here: {', '.join(allowed)}")
        elif error["type"] == "missing":
            lines.append(f"{key}: required key is missing")
        else:
            message = error["msg"].removeprefix("Value error, ")
            given = error.get("input")
            shown = "" if isinstance(given, dict) or given is None else f" (got {given!r})"
            lines.append(f"{key}: {message}{shown}")
    return f"{path}: invalid spec:\n  " + "\n  ".join(lines)


def _resolve_paths(spec: Spec, base: Path) -> Spec:
    def absolute(p: Path | None) -> Path | None:
        return None if p is None else (p if p.is_absolute() else base / p).resolve()

    source = spec.model.source.model_copy(update={"onnx": absolute(spec.model.source.onnx)})
    model = spec.model.model_copy(update={"source": source})
    server = spec.server.model_copy(
        update={
            "tritonserver": absolute(spec.server.tritonserver),
            "backend_directory": absolute(spec.server.backend_directory),
        }
    )
    update: dict[str, Any] = {"model": model, "server": server}
    if spec.baseline is not None:
        update["baseline"] = spec.baseline.model_copy(
            update={"config_pbtxt": absolute(spec.baseline.config_pbtxt)}
        )
    return spec.model_copy(update=update)


def _check_files(spec: Spec, path: Path) -> None:
    onnx_path = spec.model.source.onnx
    if onnx_path is not None and not onnx_path.is_file():
        raise SpecError(f"{path}: model.source.onnx: no such file: {onnx_path}")
    if spec.model.source.pytorch is not None:
        resolve_factory(spec.model.source.pytorch, path)
    for key, value in (
        ("server.tritonserver", spec.server.tritonserver),
        ("server.backend_directory", spec.server.backend_directory),
    ):
        if value is not None and not value.exists():
            raise SpecError(f"{path}: {key}: no such file or folder: {value}")
    if spec.baseline is not None and spec.baseline.config_pbtxt is not None:
        if not spec.baseline.config_pbtxt.is_file():
            raise SpecError(f"{path}: baseline.config_pbtxt: no such file: {spec.baseline.config_pbtxt}")


def resolve_factory(reference: str, spec_path: Path) -> Any:
    """Import ``module.path:factory``; the spec's folder is importable, like a project root."""
    module_name, _, attribute = reference.partition(":")
    folder = str(spec_path.parent.resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time error of user code is a spec problem
        raise SpecError(
            f"{spec_path}: model.source.pytorch: cannot import module '{module_name}': {exc}",
            hint="the module must be importable from the spec's folder or the installed packages",
        ) from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise SpecError(
            f"{spec_path}: model.source.pytorch: '{module_name}' has no callable '{attribute}'",
            hint="give 'module.path:factory' where factory() returns a torch.nn.Module",
        )
    return factory


def _baseline(spec: Spec, path: Path) -> TrialConfig | None:
    base = spec.baseline
    if base is None:
        return None
    if base.config_pbtxt is not None:
        from sweeper.triton_config import knobs_from_pbtxt  # the config stage owns parsing

        try:
            knobs = knobs_from_pbtxt(base.config_pbtxt.read_text())
        except ValueError as exc:
            raise SpecError(f"{path}: baseline.config_pbtxt: {exc}") from None
    else:
        knobs = {
            "max_batch_size": base.max_batch_size,
            "max_queue_delay_us": base.max_queue_delay_us,
            "instance_count": base.instance_count,
        }
    config = TrialConfig(**knobs, protocol=base.protocol, precision=base.precision)
    for knob, value in config.as_dict().items():
        choices = getattr(spec.search_space, knob)
        if value not in choices:
            raise SpecError(
                f"{path}: baseline.{knob}: {value!r} is not among search_space.{knob} {choices}",
                hint="add the baseline's value to the search space so it can be compared on the front",
            )
    return config
