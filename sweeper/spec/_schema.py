"""The spec's schema: the pydantic models that are the user-facing contract documented in
docs/spec.md. Strict scalars (a YAML boolean is not a number, a float is not an integer), unknown
keys refused, every model frozen."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, Strict, StrictBool, model_validator

from sweeper.artifacts import PRECISIONS
from sweeper.samplers import DEFAULT_SAMPLER, SAMPLERS
from sweeper.tensors import DATATYPES
from sweeper.vocabulary import (
    ARRIVALS,
    BATCHING_OFF,
    CAPACITY,
    KNOBS,
    LAUNCHER_NAMES,
    LOAD_MODES,
    METRICS,
    PERCENTILES,
    PROTOCOLS,
    REUSE_NAMES,
    TRIAL_METRICS,
    Bound,
    Level,
    LoadSettings,
    Objective,
    Ranking,
    SearchBounds,
    capacity_column,
    level_label,
    metric_column,
)

INT32_MAX = 2**31 - 1
UINT64_MAX = 2**64 - 1

# Strict scalars: a YAML boolean is not a number, a float is not an integer.
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict(), Field(allow_inf_nan=False)]  # .inf bounds no search
Int32 = Annotated[int, Strict(), Field(le=INT32_MAX)]
Metric = Literal[(*METRICS, *TRIAL_METRICS, CAPACITY)]  # type: ignore[valid-type]
Percentile = Literal[PERCENTILES]  # type: ignore[valid-type]
MAX_RATE = 1e7
MAX_CONCURRENCY = 4096
Rate = Annotated[float, Strict(), Field(gt=0, le=MAX_RATE, allow_inf_nan=False, description="requests/s")]
Protocol = Literal[PROTOCOLS]  # type: ignore[valid-type]
Precision = Literal[tuple(PRECISIONS)]  # type: ignore[valid-type]
Datatype = Literal[DATATYPES]  # type: ignore[valid-type]
OptionValue = Union[Annotated[bool, Strict()], Int, Float, str]
ConfigValue = Union[OptionValue, list[Any], dict[str, Any]]
"""A config field's value: checked against the field's type by ``sweeper.triton_config``."""


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
    seed: Int | None = Field(default=0, ge=0, le=2**32 - 1, description="numpy and Optuna take 0 .. 2**32-1")
    storage: str | None = None
    heartbeat_s: Int = Field(default=10, ge=1, le=3600, description="a worker silent for 3x this is dead")
    confirm_repeats: Int = Field(
        default=2, ge=0, le=50, description="fresh-server repeats of the front's candidates after the search (0: off)"
    )
    confirm_candidates: Int | None = Field(
        default=None, ge=1, le=1000, description="at most this many candidates besides the baseline (None: all)"
    )
    anchor_every: Int = Field(
        default=10, ge=0, le=100_000, description="re-measure the baseline after every this many trials (0: never)"
    )
    neighbours: Int | None = Field(
        default=None,
        ge=0,
        le=100_000,
        description="of study.trials, the last this many measure untried neighbours (one knob moved) of the "
        "knee, then of the next front trials (None: a quarter; 0: none; the grid sampler: none)",
    )

    @property
    def neighbour_trials(self) -> int:
        """How many of ``trials`` go to the knee's neighbours: ``neighbours`` or a quarter, and
        never the baseline's own trial."""
        if self.sampler == "grid":  # a grid measures every neighbour in its turn
            return 0
        wanted = self.neighbours if self.neighbours is not None else self.trials // 4
        return min(wanted, self.trials - 1)


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


class InputRangeSpec(_Strict):
    """One input's own range in ``model.example_inputs.ranges``."""

    low: Float
    high: Float

    @model_validator(mode="after")
    def _range(self) -> InputRangeSpec:
        if self.high <= self.low:
            raise ValueError(f"high ({self.high}) must be greater than low ({self.low})")
        return self


class ExampleInputsSpec(_Strict):
    """``model.example_inputs:``: how requests are generated when no input data is given:
    uniform in [low, high), or an input's own range (``ranges: {input_ids: {low: 0, high: 30522}}``:
    token ids below an embedding's size, an attention mask in [0, 2))."""

    batch_size: Int32 = Field(default=1, ge=1, description="samples per request")
    low: Float = 0.0
    high: Float = 1.0
    ranges: dict[str, InputRangeSpec] = Field(default_factory=dict)
    seed: Int = Field(default=0, ge=0, le=2**32 - 1, description="numpy's generators take 0 .. 2**32-1")
    samples: Int = Field(default=8, ge=1, le=10_000, description="generated samples (requests cycle through them)")

    @model_validator(mode="after")
    def _range(self) -> ExampleInputsSpec:
        if self.high <= self.low:
            raise ValueError(f"high ({self.high}) must be greater than low ({self.low})")
        return self

    @property
    def input_ranges(self) -> dict[str, tuple[float, float]]:
        """Each input's own (low, high)."""
        return {name: (r.low, r.high) for name, r in self.ranges.items()}


class ModelSpec(_Strict):
    """``model:``: the model, its inputs and the data requests carry."""

    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    source: SourceSpec
    inputs: list[InputSpec] | None = Field(default=None, min_length=1)
    outputs: list[Annotated[str, Field(min_length=1)]] | None = Field(
        default=None, min_length=1, description="a PyTorch factory's output names, in the order it returns them"
    )
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

    launcher: Literal[LAUNCHER_NAMES] = "local"  # type: ignore[valid-type]
    reuse: Literal[REUSE_NAMES] = "restart"  # type: ignore[valid-type]
    tritonserver: Path | None = None
    backend_directory: Path | None = None
    backend: Literal["auto", "onnxruntime", "python"] = "auto"
    address: str = "127.0.0.1"
    startup_timeout_s: Float = Field(default=120.0, gt=0, le=86_400)
    docker: DockerSpec | None = None
    keep_gpu: StrictBool = Field(
        default=False,
        description="a model config that asks for a GPU (KIND_GPU, TensorRT) is refused on a host without one, "
        "instead of being measured on its CPU",
    )

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
    config: dict[str, list[ConfigValue]] = Field(
        default_factory=dict, description="ModelConfig field path -> values (checked against model_config.proto)"
    )
    server: dict[str, list[OptionValue]] = Field(
        default_factory=dict, description="tritonserver option -> values (checked against Triton 2.51's options)"
    )

    @model_validator(mode="after")
    def _no_repeats(self) -> SearchSpaceSpec:
        for knob in KNOBS:
            values = getattr(self, knob)
            if values is not None and len(set(map(str, values))) != len(values):
                raise ValueError(f"{knob} lists a value twice: {values}")
        for key, table in (("config", self.config), ("server", self.server)):
            for name, values in table.items():
                if not values:
                    raise ValueError(f"{key}.{name}: give at least one value")
                if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
                    raise ValueError(f"{key}.{name} lists a value twice: {values}")
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


_CAPACITY_DEFAULTS = {"concurrency": (1, 64, 1), "request_rate": (10, 5000, 10)}
"""``load.capacity`` low, high and resolution when the spec leaves them out, per ``load.mode``."""


class CapacitySearchSpec(_Strict):
    """``load.capacity:``: the loads a capacity search may try (concurrency, or requests/s in
    request_rate mode) and how close it bisects (defaults: ``_CAPACITY_DEFAULTS``)."""

    low: Float | None = Field(default=None, gt=0)
    high: Float | None = Field(default=None, gt=0)
    resolution: Float | None = Field(default=None, gt=0)
    retakes: Int = Field(
        default=2,
        ge=0,
        le=20,
        description="measurements of the load a search found, taken again after it: the capacity is the median "
        "throughput of that load's measurements (0: its one measurement)",
    )


class LoadSpec(_Strict):
    """``load:``: the load generator, the loads it measures at and how it measures."""

    generator: Literal["auto", "builtin", "perf_analyzer"] = "auto"
    perf_analyzer: str | list[str] | PerfAnalyzerImageSpec | None = Field(
        default=None, description="a binary, a command prefix, or {image: ...}; default: looked up"
    )
    mode: Literal[LOAD_MODES] = "concurrency"  # type: ignore[valid-type]
    concurrency: list[Annotated[int, Strict(), Field(ge=1, le=MAX_CONCURRENCY)]] = Field(default=[1], min_length=1)
    request_rates: list[Rate] | None = Field(default=None, min_length=1)
    arrival: Literal[ARRIVALS] = "constant"  # type: ignore[valid-type]
    capacity: CapacitySearchSpec = CapacitySearchSpec()
    warmup_s: Float = Field(default=0.5, ge=0, le=3600)
    window_s: Float = Field(default=0.5, ge=0.05, le=3600)
    stability_tolerance: Float = Field(default=0.15, gt=0, le=1)
    max_windows: Int = Field(default=6, ge=3, le=1000)
    request_timeout_s: Float = Field(default=60.0, gt=0, le=86_400)
    client_memory_mb: Float | None = Field(
        default=None,
        gt=0,
        description="the most memory perf_analyzer may hold before it is stopped (its loads from there are "
        "measured by the built-in client); default: half the memory the host has available when it starts",
    )

    @model_validator(mode="after")
    def _levels(self) -> LoadSpec:
        if len(set(self.concurrency)) != len(self.concurrency):
            raise ValueError(f"concurrency lists a level twice: {self.concurrency}")
        if self.request_rates is not None and len(set(self.request_rates)) != len(self.request_rates):
            raise ValueError(f"request_rates lists a rate twice: {self.request_rates}")
        if isinstance(self.perf_analyzer, list) and not self.perf_analyzer:
            raise ValueError("perf_analyzer: a command prefix needs at least one word")
        if self.mode == "request_rate" and self.request_rates is None:
            raise ValueError("request_rates: mode request_rate needs the rates to measure at (requests/s)")
        if self.mode == "concurrency" and self.request_rates is not None:
            raise ValueError("request_rates: rates are measured in mode request_rate (load.mode)")
        low, high, resolution = self.capacity_bounds
        if self.mode == "concurrency" and not all(float(v).is_integer() for v in (low, high, resolution)):
            raise ValueError("capacity: low, high and resolution are whole numbers of requests in flight")
        if high <= low:
            raise ValueError(f"capacity: high ({high:g}) must be greater than low ({low:g})")
        ceiling = MAX_CONCURRENCY if self.mode == "concurrency" else MAX_RATE
        unit = "requests in flight" if self.mode == "concurrency" else "requests/s"
        if high > ceiling:
            raise ValueError(f"capacity.high: at most {ceiling:g} {unit} in load.mode {self.mode} (got {high:g})")
        return self

    @property
    def perf_analyzer_setting(self) -> str | list[str] | dict | None:
        """``perf_analyzer`` as ``sweeper.load.find_perf_analyzer`` takes it (an image as a mapping)."""
        value = self.perf_analyzer
        return value.model_dump() if isinstance(value, PerfAnalyzerImageSpec) else value

    @property
    def capacity_bounds(self) -> tuple[float, float, float]:
        """``load.capacity``'s low, high and resolution, the mode's defaults where unset."""
        given = (self.capacity.low, self.capacity.high, self.capacity.resolution)
        return tuple(v if v is not None else d for v, d in zip(given, _CAPACITY_DEFAULTS[self.mode]))

    @property
    def settings(self) -> LoadSettings:
        """This block as the load generators take it."""
        low, high, resolution = self.capacity_bounds
        concurrency = self.mode == "concurrency"
        return LoadSettings(
            levels=tuple(self.levels),
            capacity=SearchBounds(
                low,
                high,
                resolution,
                integer=concurrency,
                unit="concurrency" if concurrency else "requests/s",
                retakes=self.capacity.retakes,
            ),
            warmup_s=self.warmup_s,
            window_s=self.window_s,
            stability_tolerance=self.stability_tolerance,
            max_windows=self.max_windows,
            request_timeout_s=self.request_timeout_s,
            client_memory_mb=self.client_memory_mb,
        )

    @property
    def levels(self) -> list[Level]:
        """The loads every trial measures, in the spec's order."""
        if self.mode == "request_rate":
            return [Level(request_rate=rate, arrival=self.arrival) for rate in self.request_rates or []]
        return [Level(concurrency=level) for level in self.concurrency]

    @property
    def level_labels(self) -> list[str]:
        """The levels as columns name them (``c1``, ``r500``)."""
        return [level.label for level in self.levels]


class _MetricSpec(_Strict):
    """A metric an objective or constraint names: of one load level (``p50_ms`` at
    ``concurrency: 1`` or at ``request_rate: 500``), of the whole trial (``server_memory_mb``),
    or a capacity (``capacity`` with a latency ``percentile`` and its ``budget_ms``)."""

    metric: Metric
    concurrency: Int | None = Field(default=None, ge=1)
    request_rate: Rate | None = None
    percentile: Percentile | None = None
    budget_ms: Float | None = Field(default=None, gt=0, description="the latency budget of a capacity")

    @model_validator(mode="after")
    def _level(self) -> _MetricSpec:
        level = self.concurrency is not None or self.request_rate is not None
        if self.metric == CAPACITY:
            if self.percentile is None or self.budget_ms is None:
                raise ValueError("capacity needs the latency 'percentile' (p99_ms, ...) and its 'budget_ms'")
            if level:
                raise ValueError("capacity searches the load itself (load.capacity): give no concurrency or rate")
            return self
        if self.percentile is not None or self.budget_ms is not None:
            raise ValueError(f"'percentile' and 'budget_ms' belong to metric capacity, not {self.metric}")
        if self.metric in TRIAL_METRICS and level:
            raise ValueError(f"{self.metric} is the peak over the whole trial: give no concurrency or rate")
        if self.metric not in TRIAL_METRICS and not level:
            raise ValueError(
                f"{self.metric} is measured per level: give the concurrency (or request_rate) it is taken at"
            )
        if self.concurrency is not None and self.request_rate is not None:
            raise ValueError(f"{self.metric}: give a concurrency or a request_rate, not both")
        return self

    @property
    def level(self) -> str | None:
        """The level it is taken at (``c1``, ``r500``), or None."""
        if self.concurrency is None and self.request_rate is None:
            return None
        return level_label(self.concurrency, self.request_rate)

    @property
    def column(self) -> str:
        """The table column it names (``p50_ms@c1``, ``capacity@p99_ms<=20``, ``server_memory_mb``)."""
        if self.metric == CAPACITY:
            return capacity_column(self.percentile, self.budget_ms)
        return self.metric if self.level is None else metric_column(self.metric, self.level)


class ObjectiveSpec(_MetricSpec):
    """One of ``objectives:``: a metric minimized or maximized."""

    direction: Literal["minimize", "maximize"]
    primary: StrictBool = Field(
        default=False, description="the pick takes the front's best on this objective first (at most one)"
    )


class ConstraintSpec(_MetricSpec):
    """One of ``constraints:``: a bound a feasible trial's metric must keep."""

    max: Float | None = None
    min: Float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> ConstraintSpec:
        if (self.max is None) == (self.min is None):
            raise ValueError("give exactly one of 'max' or 'min'")
        return self

    @property
    def bound(self) -> Bound:
        """The constraint as a bound on its column."""
        return Bound(self.column, "<=", self.max) if self.max is not None else Bound(self.column, ">=", self.min)


class AccuracySpec(_Strict):
    """How far FP16/INT8 outputs may drift from the reference model on the sweep's samples."""

    min_cosine_similarity: Float = Field(default=0.999, ge=-1, le=1)
    max_abs_error: Float | None = Field(default=None, gt=0)
    min_top1_agreement: Float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="the share of score vectors whose highest entry (class, token) stays the reference's",
    )
    top1_outputs: list[Annotated[str, Field(min_length=1)]] | None = Field(
        default=None,
        min_length=1,
        description="the outputs whose last axis is scores; default: every float output whose last axis is not 1",
    )


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
        self._levels_measured()
        columns = [o.column for o in self.objectives]
        if len(set(columns)) != len(columns):
            raise ValueError(f"objectives repeat a metric: {columns}")
        if sum(o.primary for o in self.objectives) > 1:
            raise ValueError(
                f"objectives: at most one is primary, got {[o.column for o in self.objectives if o.primary]}"
            )
        tensorrt = sorted(p for p in self.search_space.precision or [] if PRECISIONS[p].tensorrt)
        if tensorrt and self.server.backend == "python":
            raise ValueError(
                f"search_space.precision {tensorrt} runs TensorRT inside Triton's onnxruntime backend; "
                "server.backend must be auto or onnxruntime"
            )
        source = self.model.source
        if source.pytorch is not None and self.model.inputs is None:
            raise ValueError("model.inputs is required for a pytorch source (name, datatype, shape)")
        if source.pytorch is None and self.model.outputs is not None:
            raise ValueError(
                "model.outputs names a PyTorch factory's outputs; an ONNX file or a model folder names its own"
            )
        if self.model.outputs is not None and len(set(self.model.outputs)) != len(self.model.outputs):
            raise ValueError(f"model.outputs names an output twice: {self.model.outputs}")
        if source.repository is None and self.model.name is None:
            raise ValueError("model.name is required (it defaults to the folder's name only for a repository source)")
        return self

    def _levels_measured(self) -> None:
        """Each objective's and constraint's level is one that load measures."""
        listed = "load.request_rates" if self.load.mode == "request_rate" else "load.concurrency"
        levels = self.load.level_labels
        for key, entries in (("objectives", self.objectives), ("constraints", self.constraints)):
            for index, entry in enumerate(entries):
                if entry.level is None or entry.level in levels:
                    continue
                if (entry.concurrency is not None) != (self.load.mode == "concurrency"):
                    given = "concurrency" if entry.concurrency is not None else "request_rate"
                    raise ValueError(
                        f"{key}.{index}.{given}: load.mode is {self.load.mode}; "
                        f"name a level of {listed} {self.load.level_labels}"
                    )
                raise ValueError(
                    f"{key}.{index}: {entry.column} is measured at {entry.level}, which {listed} "
                    f"{[level.value for level in self.load.levels]} does not include"
                )

    @property
    def capacities(self) -> list[_MetricSpec]:
        """The capacity searches the objectives and constraints name, each once."""
        found: dict[str, _MetricSpec] = {}
        for entry in [*self.objectives, *self.constraints]:
            if entry.metric == CAPACITY:
                found.setdefault(entry.column, entry)
        return list(found.values())

    @property
    def ranking(self) -> Ranking:
        """The objectives and the metric bounds of a feasible trial."""
        return Ranking(
            tuple(Objective(o.column, o.direction) for o in self.objectives),
            tuple(c.bound for c in self.constraints),
            next((o.column for o in self.objectives if o.primary), None),
        )
