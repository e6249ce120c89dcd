"""Stage 1: the YAML spec, validated whole before anything is written or started.

The pydantic models below are the user-facing contract documented in README.md.
``load_spec`` turns every problem (a file that is not text, YAML syntax, a duplicated key,
an unknown key, a wrong type or range, a model that does not load, a factory that fails, data
that does not fit the model) into one ``SpecError`` naming the file, the key path and what is
allowed. Messages are bounded: nothing the user wrote is echoed at length.

YAML is read with YAML 1.2's booleans (only ``true``/``false``): ``off``, ``on``, ``yes`` and
``no`` are strings, so ``max_queue_delay_us: [off, 0]`` means what it says.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, Strict, ValidationError, model_validator

from sweeper.artifacts import PRECISIONS, REFERENCE_PRECISIONS
from sweeper.data import DataError, Samples, generate_samples, read_samples
from sweeper.errors import SpecError
from sweeper.launchers import LAUNCHERS
from sweeper.samplers import DEFAULT_SAMPLER, SAMPLERS, missing_requirement
from sweeper.source import ModelSource, SourceError, from_onnx, from_pytorch, from_repository
from sweeper.tensors import DATATYPES, TensorSpec
from sweeper.triton_config import knobs_from_config, parse_pbtxt
from sweeper.vocabulary import BATCHING_OFF, KNOBS, METRICS, PROTOCOLS, TrialConfig, metric_column

INT32_MAX = 2**31 - 1
UINT64_MAX = 2**64 - 1
_MAX_SPEC_BYTES = 1 << 20
_MAX_YAML_NODES = 20_000
_MAX_PROBLEMS = 12
_MAX_ECHO = 80

# Strict scalars: a YAML boolean is not a number, a float is not an integer.
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Int32 = Annotated[int, Strict(), Field(le=INT32_MAX)]
Metric = Literal[METRICS]  # type: ignore[valid-type]
Protocol = Literal[PROTOCOLS]  # type: ignore[valid-type]
Precision = Literal[tuple(PRECISIONS)]  # type: ignore[valid-type]
Datatype = Literal[DATATYPES]  # type: ignore[valid-type]


def _delay(value: Any) -> int | str:
    if value == BATCHING_OFF or (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= UINT64_MAX):
        return value
    hint = " (write off, not false)" if value is False else ""
    raise ValueError(f"must be off (no dynamic batching) or microseconds from 0 (batching, no wait) to 2^64-1{hint}")


Delay = Annotated[Union[int, str], PlainValidator(_delay)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StudySpec(_Strict):
    """``study:``: the study's name, size, sampler, seed and storage."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)
    trials: Int = Field(default=20, ge=1, le=100_000)
    sampler: Literal[tuple(SAMPLERS)] = DEFAULT_SAMPLER  # type: ignore[valid-type]
    seed: Int | None = 0
    storage: str | None = None
    heartbeat_s: Int = Field(default=10, ge=1, le=3600, description="a worker silent for 3x this is dead")


class SourceSpec(_Strict):
    """``model.source:``: exactly one of an ONNX file, a PyTorch factory or a model folder."""

    onnx: Path | None = None
    pytorch: str | None = Field(default=None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    repository: Path | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SourceSpec:
        if sum(v is not None for v in (self.onnx, self.pytorch, self.repository)) != 1:
            raise ValueError(
                "give exactly one of 'onnx: PATH', 'pytorch: \"module.path:factory\"' or 'repository: MODEL_FOLDER'"
            )
        return self


class InputSpec(_Strict):
    """One of ``model.inputs``: a tensor's name, datatype and per-sample shape."""

    name: str = Field(min_length=1)
    datatype: Datatype
    shape: list[Annotated[int, Strict(), Field(ge=1, le=INT32_MAX)]] = Field(
        description="per-sample shape, without the batch axis"
    )


class ExampleInputsSpec(_Strict):
    """``model.example_inputs:``: how requests are generated when no input data is given."""

    batch_size: Int32 = Field(default=1, ge=1, description="samples per request")
    low: Float = 0.0
    high: Float = 1.0
    seed: Int = 0
    samples: Int = Field(default=8, ge=1, le=10_000, description="generated samples (requests cycle through them)")

    @model_validator(mode="after")
    def _range(self) -> ExampleInputsSpec:
        if self.high <= self.low:
            raise ValueError(f"high ({self.high}) must be greater than low ({self.low})")
        return self


class ModelSpec(_Strict):
    """``model:``: the model, its inputs and the data requests carry."""

    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    source: SourceSpec
    inputs: list[InputSpec] | None = Field(default=None, min_length=1)
    input_data: Path | None = None
    example_inputs: ExampleInputsSpec = ExampleInputsSpec()


class DockerSpec(_Strict):
    """``server.docker:``: the container each server runs in."""

    image: str = "nvcr.io/nvidia/tritonserver:24.10-py3"
    gpus: Literal["all", "none"] | list[Annotated[int, Strict(), Field(ge=0)]] = "none"
    shm_size: str = "1g"
    # NVIDIA's recommended limits for Triton (docker run --ulimit memlock=-1 --ulimit stack=67108864);
    # -1 is unlimited. A host whose own hard limit is lower needs a value within it.
    ulimits: dict[str, Int] = Field(default_factory=lambda: {"memlock": -1, "stack": 67108864})
    volumes: dict[str, str] = Field(default_factory=dict, description="host path -> container path (read-only)")
    env: dict[str, str] = Field(default_factory=dict)
    network: Literal["host", "published"] = "published"
    bridge: str | None = Field(default=None, description="Docker network for 'published'; default the engine's bridge")
    pull: Literal["never", "missing", "always"] = "missing"
    tritonserver: str = "tritonserver"
    backend_directory: str | None = None
    base_url: str | None = Field(default=None, description="Docker engine URL; default from DOCKER_HOST")


class ServerSpec(_Strict):
    """``server:``: how Triton is started and reused."""

    launcher: Literal[tuple(LAUNCHERS)] = "local"  # type: ignore[valid-type]
    reuse: Literal["restart", "reload"] = "restart"
    tritonserver: Path | None = None
    backend_directory: Path | None = None
    backend: Literal["auto", "onnxruntime", "python"] = "auto"
    address: str = "127.0.0.1"
    startup_timeout_s: Float = Field(default=120.0, gt=0, le=86_400)
    docker: DockerSpec | None = None

    @model_validator(mode="after")
    def _docker_block(self) -> ServerSpec:
        if self.docker is not None and self.launcher != "docker":
            raise ValueError("a 'docker' block needs 'launcher: docker'")
        if self.launcher == "docker" and self.docker is None:
            return self.model_copy(update={"docker": DockerSpec()})
        return self


class SearchSpaceSpec(_Strict):
    """Each knob a list of choices; a knob left out keeps the baseline's (the model's own) value."""

    max_batch_size: list[Annotated[int, Strict(), Field(ge=1, le=INT32_MAX)]] | None = Field(default=None, min_length=1)
    max_queue_delay_us: list[Delay] | None = Field(default=None, min_length=1)
    instance_count: list[Annotated[int, Strict(), Field(ge=1, le=INT32_MAX)]] | None = Field(default=None, min_length=1)
    protocol: list[Protocol] | None = Field(default=None, min_length=1)
    precision: list[Precision] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _no_repeats(self) -> SearchSpaceSpec:
        for knob in KNOBS:
            values = getattr(self, knob)
            if values is not None and len(set(map(str, values))) != len(values):
                raise ValueError(f"{knob} lists a value twice: {values}")
        return self


class BaselineSpec(_Strict):
    """The configuration the team runs today; unset knobs come from ``config_pbtxt`` or the
    model folder's own config."""

    config_pbtxt: Path | None = None
    max_batch_size: Int32 | None = Field(default=None, ge=0)
    max_queue_delay_us: Delay | None = None
    instance_count: Int32 | None = Field(default=None, ge=1)
    protocol: Protocol | None = None
    precision: Precision | None = None

    @model_validator(mode="after")
    def _not_both(self) -> BaselineSpec:
        server_knobs = (self.max_batch_size, self.max_queue_delay_us, self.instance_count)
        if self.config_pbtxt is not None and any(v is not None for v in server_knobs):
            raise ValueError("give either config_pbtxt or the three server knobs, not both")
        return self


class PerfAnalyzerImageSpec(_Strict):
    """perf_analyzer in a container (e.g. NVIDIA's ``tritonserver:<yy.mm>-py3-sdk``), host network."""

    image: str
    command: list[str] = Field(default_factory=lambda: ["perf_analyzer"], min_length=1)
    volumes: dict[str, str] = Field(default_factory=dict, description="host path -> container path (read-only)")
    env: dict[str, str] = Field(default_factory=dict)
    pull: Literal["never", "missing"] = "missing"
    base_url: str | None = None


class LoadSpec(_Strict):
    """``load:``: the load generator and how it measures."""

    generator: Literal["auto", "builtin", "perf_analyzer"] = "auto"
    perf_analyzer: str | list[str] | PerfAnalyzerImageSpec | None = Field(
        default=None, description="a binary, a command prefix, or {image: ...}; default: looked up"
    )
    concurrency: list[Annotated[int, Strict(), Field(ge=1, le=4096)]] = Field(default=[1], min_length=1)
    warmup_s: Float = Field(default=0.5, ge=0, le=3600)
    window_s: Float = Field(default=0.5, ge=0.05, le=3600)
    stability_tolerance: Float = Field(default=0.15, gt=0, le=1)
    max_windows: Int = Field(default=6, ge=3, le=1000)
    request_timeout_s: Float = Field(default=60.0, gt=0, le=86_400)

    @model_validator(mode="after")
    def _levels(self) -> LoadSpec:
        if len(set(self.concurrency)) != len(self.concurrency):
            raise ValueError(f"concurrency lists a level twice: {self.concurrency}")
        if isinstance(self.perf_analyzer, list) and not self.perf_analyzer:
            raise ValueError("perf_analyzer: a command prefix needs at least one word")
        return self


class ObjectiveSpec(_Strict):
    """One of ``objectives:``: a metric at a concurrency level, minimized or maximized."""

    metric: Metric
    concurrency: Int = Field(ge=1)
    direction: Literal["minimize", "maximize"]

    @property
    def column(self) -> str:
        """The table column it names (``p50_ms@c1``)."""
        return metric_column(self.metric, self.concurrency)


class ConstraintSpec(_Strict):
    """One of ``constraints:``: a bound a feasible trial's metric must keep."""

    metric: Metric
    concurrency: Int = Field(ge=1)
    max: Float | None = None
    min: Float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> ConstraintSpec:
        if (self.max is None) == (self.min is None):
            raise ValueError("give exactly one of 'max' or 'min'")
        return self

    @property
    def column(self) -> str:
        """The table column it names (``p50_ms@c1``)."""
        return metric_column(self.metric, self.concurrency)


class AccuracySpec(_Strict):
    """How far FP16/INT8 outputs may drift from the reference model on the sweep's samples."""

    min_cosine_similarity: Float = Field(default=0.999, ge=-1, le=1)
    max_abs_error: Float | None = Field(default=None, gt=0)


class Spec(_Strict):
    """A whole spec file."""

    study: StudySpec
    model: ModelSpec
    server: ServerSpec = ServerSpec()
    search_space: SearchSpaceSpec = SearchSpaceSpec()
    baseline: BaselineSpec | None = None
    load: LoadSpec = LoadSpec()
    objectives: list[ObjectiveSpec] = Field(min_length=1, max_length=8)
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
        tensorrt = sorted(p for p in self.search_space.precision or [] if PRECISIONS[p].tensorrt)
        if tensorrt and self.server.backend == "python":
            raise ValueError(
                f"search_space.precision {tensorrt} runs TensorRT inside Triton's onnxruntime backend; "
                "server.backend must be auto or onnxruntime"
            )
        source = self.model.source
        if source.pytorch is not None and self.model.inputs is None:
            raise ValueError("model.inputs is required for a pytorch source (name, datatype, shape)")
        if source.repository is None and self.model.name is None:
            raise ValueError("model.name is required (it defaults to the folder's name only for a repository source)")
        return self


@dataclasses.dataclass(frozen=True)
class LoadedSpec:
    """A validated spec and what was resolved from it: the model, its samples, the search
    space (every knob's choices) and the baseline."""

    spec: Spec
    path: Path
    model: ModelSource
    samples: Samples
    space: dict[str, list]
    baseline: TrialConfig | None

    @property
    def name(self) -> str:
        """The study's name."""
        return self.spec.study.name

    @property
    def space_size(self) -> int:
        """How many distinct configurations the search space holds."""
        return math.prod(len(choices) for choices in self.space.values())


def load_spec(path: Path, *, study_name: str | None = None, trials: int | None = None) -> LoadedSpec:
    """Read, validate and resolve a spec file; raise ``SpecError`` on any problem."""
    path = Path(path)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: the spec must be a YAML mapping with keys {', '.join(Spec.model_fields)}")
    if study_name is not None:
        if not isinstance(raw.get("study"), dict):
            raw["study"] = {}
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
    _check_paths(spec, path)
    model = _model_source(spec, path)
    samples = _samples(spec, model, path)
    space = _space(spec, model, path)
    baseline = _baseline(spec, model, space, path)
    if spec.model.example_inputs.batch_size > 1:
        smallest = min(space["max_batch_size"])
        if not model.batched or spec.model.example_inputs.batch_size > smallest:
            raise SpecError(
                f"{path}: model.example_inputs.batch_size: {spec.model.example_inputs.batch_size} samples a request "
                f"exceed max_batch_size {smallest}, which the search space includes"
            )
    return LoadedSpec(spec, path.resolve(), model, samples, space, baseline)


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML with YAML 1.2 booleans and no duplicated keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicated key {_echo(key)}", key_node.start_mark)
            seen[key] = True
        return super().construct_mapping(node, deep=deep)


_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _StrictLoader.construct_mapping)


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Nodes the document has once its aliases are expanded (an alias bomb has billions)."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = 1  # a recursive alias counts once
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    else:
        size = 1
    memo[id(node)] = size
    return size


def read_yaml(path: Path) -> Any:
    """A spec file's YAML, read strictly (see the module docstring); SpecError on any problem."""
    try:
        if path.is_dir():
            raise SpecError(f"{path}: is a folder, not a spec file")
        data = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the spec: {exc.strerror}") from None
    if len(data) > _MAX_SPEC_BYTES:
        raise SpecError(f"{path}: {len(data)} bytes is too large for a spec (at most {_MAX_SPEC_BYTES})")
    if b"\x00" in data:
        raise SpecError(f"{path}: is a binary file, not a YAML spec")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: is not UTF-8 text (byte {exc.start})") from None
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > _MAX_YAML_NODES:
            raise SpecError(
                f"{path}: the YAML expands to more than {_MAX_YAML_NODES} values (aliases?); a spec is far smaller"
            )
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{path}{line}: the YAML does not parse: {problem[:200]}") from None
    finally:
        loader.dispose()


def _echo(value: Any) -> str:
    """A bounded repr of something the user wrote."""
    text = repr(value)
    return text if len(text) <= _MAX_ECHO else text[: _MAX_ECHO - 3] + "..."


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


def _key_path(loc: tuple[Any, ...], unknown_key: bool) -> tuple[Any, ...]:
    """An error's location as the user wrote it: without the names pydantic gives the
    alternatives of a union (``str``, ``list[str]``, ``PerfAnalyzerImageSpec``)."""
    model: Any = Spec
    path: list[Any] = []
    for index, part in enumerate(loc):
        if isinstance(part, int):
            path.append(part)
            continue
        fields = model.model_fields if isinstance(model, type) and issubclass(model, BaseModel) else None
        if fields is not None and part in fields:
            path.append(part)
            model = _inner_model(fields[part].annotation) or fields[part].annotation
        elif (unknown_key and index == len(loc) - 1) or (fields is None and not any(c in part for c in "[-'")):
            path.append(part)  # the unknown key the user wrote, or a key of a mapping
    return tuple(path)


def _describe(path: Path, exc: ValidationError) -> str:
    lines, seen = [], set()
    for error in exc.errors():
        # A union reports each alternative: name the key once.
        loc = _key_path(tuple(error["loc"]), error["type"] == "extra_forbidden")
        key = ".".join(str(p) for p in loc) or "(top level)"
        if key in seen:
            continue
        seen.add(key)
        if error["type"] == "extra_forbidden":
            owner = _model_at(loc[:-1])
            allowed = list(owner.model_fields) if owner else []
            guess = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f"; did you mean '{guess[0]}'?" if guess else "."
            lines.append(f"{_echo(key)[1:-1]}: unknown key{hint} Allowed here: {', '.join(allowed)}")
        elif error["type"] == "missing":
            lines.append(f"{key}: required key is missing")
        else:
            message = error["msg"].removeprefix("Value error, ")
            given = error.get("input")
            shown = "" if isinstance(given, (dict, list)) or given is None else f" (got {_echo(given)})"
            lines.append(f"{key}: {message[:300]}{shown}")
    more = len(lines) - _MAX_PROBLEMS
    lines = lines[:_MAX_PROBLEMS] + ([f"... and {more} more problem(s)"] if more > 0 else [])
    return f"{path}: invalid spec:\n  " + "\n  ".join(lines)


def _resolve_paths(spec: Spec, base: Path) -> Spec:
    def absolute(p: Path | None) -> Path | None:
        return None if p is None else (p if p.is_absolute() else base / p).resolve()

    source = spec.model.source
    source = source.model_copy(update={"onnx": absolute(source.onnx), "repository": absolute(source.repository)})
    model = spec.model.model_copy(update={"source": source, "input_data": absolute(spec.model.input_data)})
    server = spec.server.model_copy(
        update={
            "tritonserver": absolute(spec.server.tritonserver),
            "backend_directory": absolute(spec.server.backend_directory),
        }
    )
    update: dict[str, Any] = {"model": model, "server": server}
    if spec.baseline is not None:
        update["baseline"] = spec.baseline.model_copy(update={"config_pbtxt": absolute(spec.baseline.config_pbtxt)})
    return spec.model_copy(update=update)


def _check_paths(spec: Spec, path: Path) -> None:
    source = spec.model.source
    for key, value, kind in (
        ("model.source.onnx", source.onnx, "file"),
        ("model.source.repository", source.repository, "folder"),
        ("model.input_data", spec.model.input_data, "file"),
        ("baseline.config_pbtxt", spec.baseline.config_pbtxt if spec.baseline else None, "file"),
        ("server.tritonserver", spec.server.tritonserver, "file"),
        ("server.backend_directory", spec.server.backend_directory, "folder"),
    ):
        if value is None:
            continue
        present = value.is_file() if kind == "file" else value.is_dir()
        if not present:
            raise SpecError(f"{path}: {key}: no such {kind}: {value}")
    missing = missing_requirement(spec.study.sampler)
    if missing is not None:
        raise SpecError(
            f"{path}: study.sampler: '{spec.study.sampler}' needs {missing}, which is not installed",
            hint="pip install scipy torch, or choose another sampler: " + ", ".join(SAMPLERS),
        )


def _given_inputs(spec: Spec) -> list[TensorSpec] | None:
    given = spec.model.inputs
    return None if given is None else [TensorSpec(i.name, i.datatype, tuple(i.shape)) for i in given]


def _model_source(spec: Spec, path: Path) -> ModelSource:
    source, given = spec.model.source, _given_inputs(spec)
    key = "model.source." + next(k for k in ("onnx", "pytorch", "repository") if getattr(source, k) is not None)
    try:
        if source.pytorch is not None:
            data = spec.model.example_inputs
            example = generate_samples(given, 1, low=data.low, high=data.high, seed=data.seed).batch(0, 1, batched=True)
            model = from_pytorch(source.pytorch, spec.model.name, given, path.parent.resolve(), example)
        elif source.onnx is not None:
            model = from_onnx(source.onnx, spec.model.name)
        else:
            model = from_repository(source.repository, spec.model.name)
    except (SourceError, DataError) as exc:
        raise SpecError(f"{path}: {key}: {exc}") from None
    if given is None or source.pytorch is not None:
        return model
    declared = {t.name: t for t in model.inputs}
    inputs = []
    for tensor in given:
        known = declared.get(tensor.name)
        if known is None:
            raise SpecError(
                f"{path}: model.inputs: the model has no input '{tensor.name}' (its inputs: {', '.join(declared)})"
            )
        if (
            known.datatype != tensor.datatype
            or len(known.shape) != len(tensor.shape)
            or any(d != -1 and d != s for s, d in zip(tensor.shape, known.shape))
        ):
            raise SpecError(
                f"{path}: model.inputs: '{tensor.name}' is {tensor.datatype} {list(tensor.shape)} but the model "
                f"declares {known.datatype} {list(known.shape)} (-1 = any size)"
            )
        inputs.append(tensor)
    missing = [name for name in declared if name not in {t.name for t in given}]
    if missing:
        raise SpecError(f"{path}: model.inputs: give every input of the model; missing {missing}")
    return dataclasses.replace(model, inputs=tuple(inputs))


def _samples(spec: Spec, model: ModelSource, path: Path) -> Samples:
    inputs = list(model.inputs)
    try:
        if spec.model.input_data is not None:
            return read_samples(spec.model.input_data, inputs)
        data = spec.model.example_inputs
        return generate_samples(inputs, data.samples, low=data.low, high=data.high, seed=data.seed)
    except DataError as exc:
        key = "model.input_data" if spec.model.input_data is not None else "model.inputs"
        raise SpecError(f"{path}: {key}: {exc}") from None


def _model_knobs(spec: Spec, model: ModelSource, path: Path) -> dict[str, Any]:
    """The baseline's knobs as far as the model folder, a config_pbtxt or the spec give them."""
    knobs: dict[str, Any] = {}
    config = None
    if model.kind == "repository":
        config = model.template
    base = spec.baseline
    if base is not None and base.config_pbtxt is not None:
        try:
            config = parse_pbtxt(base.config_pbtxt.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise SpecError(f"{path}: baseline.config_pbtxt: {str(exc)[:300]}") from None
    if config is not None:
        try:
            knobs.update(knobs_from_config(config))
        except ValueError as exc:
            raise SpecError(
                f"{path}: {'baseline.config_pbtxt' if base and base.config_pbtxt else 'model.source.repository'}: {exc}"
            ) from None
    if base is not None:
        knobs.update({k: getattr(base, k) for k in KNOBS if getattr(base, k) is not None})
    # Protocol and precision are no part of a config.pbtxt: by default the space's first protocol
    # (http when it names none) and the model as given.
    given = spec.search_space
    knobs.setdefault("protocol", given.protocol[0] if given.protocol else "http")
    reference = model.reference_precision
    knobs.setdefault(
        "precision", reference if not given.precision or reference in given.precision else given.precision[0]
    )
    return knobs


def _space(spec: Spec, model: ModelSource, path: Path) -> dict[str, list]:
    given = spec.search_space
    known = _model_knobs(spec, model, path)
    if not model.batched:
        fixed = [k for k in ("max_batch_size", "max_queue_delay_us") if getattr(given, k) is not None]
        if fixed:
            raise SpecError(
                f"{path}: search_space.{fixed[0]}: the model has max_batch_size 0 (no batching): its requests have no "
                "batch axis, so max_batch_size and max_queue_delay_us cannot be swept",
                hint="sweep instance_count and protocol (and precision for an ONNX model)",
            )
        known.update(max_batch_size=0, max_queue_delay_us=BATCHING_OFF)
    space: dict[str, list] = {}
    for knob in KNOBS:
        choices = getattr(given, knob)
        if choices is None:
            if knob not in known:
                raise SpecError(
                    f"{path}: search_space.{knob}: required for a {model.kind} source (the model has no config to keep "
                    "it from); or give it in baseline"
                )
            choices = [known[knob]]
        space[knob] = list(choices)
    allowed = _allowed_precisions(model)
    for precision in space["precision"]:
        if precision not in allowed:
            raise SpecError(
                f"{path}: search_space.precision: '{precision}' is not available for this model; "
                f"allowed: {', '.join(allowed)}",
                hint="a model folder is swept as it is ('native'); FP16/INT8 versions can be made of ONNX models only"
                if model.kind == "repository"
                else "'native' is for a repository source; an ONNX or PyTorch source's reference is 'fp32'",
            )
    return space


def _allowed_precisions(model: ModelSource) -> list[str]:
    reference = model.reference_precision
    conversions = [p for p in PRECISIONS if p not in REFERENCE_PRECISIONS] if model.convertible else []
    return [reference, *conversions]


def _baseline(spec: Spec, model: ModelSource, space: dict[str, list], path: Path) -> TrialConfig | None:
    if spec.baseline is None and model.kind != "repository":
        return None
    knobs = _model_knobs(spec, model, path)
    if not model.batched:
        knobs.update(max_batch_size=0, max_queue_delay_us=BATCHING_OFF)
    missing = [k for k in KNOBS if k not in knobs]
    if missing:
        raise SpecError(f"{path}: baseline: give {', '.join(missing)} (or config_pbtxt: PATH)")
    config = TrialConfig(**{k: knobs[k] for k in KNOBS})
    for knob, value in config.as_dict().items():
        if value not in space[knob] or (isinstance(value, bool) != any(isinstance(c, bool) for c in space[knob])):
            origin = "baseline" if spec.baseline is not None else "the model's config (the default baseline)"
            raise SpecError(
                f"{path}: baseline.{knob}: {_echo(value)} from {origin} is not among search_space.{knob} {space[knob]}",
                hint="add the baseline's value to the search space so it can be compared on the front",
            )
    return config
