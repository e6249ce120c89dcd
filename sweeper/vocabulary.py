"""The trial vocabulary every stage speaks: the five knobs, the metrics and their column names.

A leaf module: it imports nothing from the package, so spec, config, load, study, results,
report and export can all share it without cycles.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from typing import Any, Literal, Union

KNOBS = ("max_batch_size", "max_queue_delay_us", "instance_count", "protocol", "precision")
"""The five knobs, in the order tables and labels show them."""

CONFIG_FIELD = "config."
"""The parameter (and column) name prefix of a swept ModelConfig field (``search_space.config``):
``config.dynamic_batching.preferred_batch_size``."""

SERVER_OPTION = "server."
"""The parameter (and column) name prefix of a swept tritonserver option (``search_space.server``):
``server.buffer-manager-thread-count``."""

MODEL_DEFAULT = None
"""A swept field's or option's value meaning "as the baseline has it": the model's config keeps
the field (or lacks it), the server gets no such option."""

PERCENTILES = ("p50_ms", "p90_ms", "p95_ms", "p99_ms")
"""The latency percentiles measured at every load (ms): what a capacity's budget may bound."""

METRICS = (*PERCENTILES, "throughput")
"""Metrics of one load level (latencies in ms, throughput in inferences/s)."""

CAPACITY = "capacity"
"""The metric of a capacity search: the throughput (inferences/s) at the highest load whose
latency percentile stays within a budget (``capacity_column``)."""

LOAD_MODES = ("concurrency", "request_rate")
"""``load.mode``: closed loop (N requests in flight) or open loop (requests sent on a schedule)."""

ARRIVALS = ("constant", "poisson")
"""``load.arrival``: the gaps between scheduled sends in request_rate mode."""

TRIAL_METRICS = ("server_memory_mb", "gpu_memory_mb")
"""Metrics of a whole trial, named without a level: the peak resident memory of the server (its
process group, or its container) and the GPU memory Triton reports, in MiB, over the measurement."""

PROTOCOLS = ("http", "grpc")

LAUNCHER_NAMES = ("local", "docker")
"""``server.launcher``: the keys of ``sweeper.launchers.LAUNCHERS``."""

REUSE_NAMES = ("restart", "reload")
"""``server.reuse``: the keys of ``sweeper.launchers.REUSE``."""

BATCHING_OFF = "off"
"""``max_queue_delay_us`` for a config without a ``dynamic_batching`` block. A number of
microseconds, 0 included, means dynamic batching on with that maximum queue delay."""

Delay = Union[int, Literal["off"]]

COMPUTE_PARTS = ("compute_input_ms", "compute_infer_ms", "compute_output_ms")
"""Triton's compute time of a request, in the order the server spends it."""


def is_parameter(name: str) -> bool:
    """Whether a table column is a trial's parameter: a knob, a config field or a server option."""
    return name in KNOBS or name.startswith((CONFIG_FIELD, SERVER_OPTION))


def parameter_columns(columns: Any) -> list[str]:
    """The parameter columns among ``columns``: the five knobs, then swept fields and options."""
    columns = list(columns)
    return [*KNOBS, *(c for c in columns if is_parameter(c) and c not in KNOBS)]


@dataclasses.dataclass(frozen=True)
class TrialConfig:
    """One point of the search space: the five knobs of a trial, and the value of each swept
    config field and server option (``extra``: parameter name -> value, as Optuna stores it)."""

    max_batch_size: int
    max_queue_delay_us: Delay
    instance_count: int
    protocol: str
    precision: str
    extra: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> TrialConfig:
        """The configuration Optuna's parameters name (the five knobs, then the rest)."""
        extra = tuple((name, value) for name, value in params.items() if name not in KNOBS)
        return cls(**{knob: params[knob] for knob in KNOBS}, extra=extra)

    @property
    def dynamic_batching(self) -> bool:
        """Whether config.pbtxt has a ``dynamic_batching`` block."""
        return self.max_queue_delay_us != BATCHING_OFF

    @property
    def config_fields(self) -> dict[str, Any]:
        """Swept ModelConfig fields (path -> value as stored; ``MODEL_DEFAULT`` leaves it)."""
        return {name[len(CONFIG_FIELD) :]: value for name, value in self.extra if name.startswith(CONFIG_FIELD)}

    @property
    def server_options(self) -> dict[str, Any]:
        """Swept tritonserver options (name without dashes -> value; ``MODEL_DEFAULT``: not passed)."""
        return {name[len(SERVER_OPTION) :]: value for name, value in self.extra if name.startswith(SERVER_OPTION)}

    def as_dict(self) -> dict[str, Any]:
        """The parameters by name, as Optuna stores them."""
        knobs = {knob: getattr(self, knob) for knob in KNOBS}
        return {**knobs, **dict(self.extra)}


def serving_key(params: dict[str, Any]) -> tuple:
    """A configuration as a hashable key of how it serves: ``off`` and 0 stay distinct, and with
    ``max_batch_size`` 1 every queue delay serves alike (a batch of one is full at once, so the
    batcher never waits): they are one configuration, ``off`` another. Without a
    ``dynamic_batching`` block, its swept fields (``config.dynamic_batching.*``) are not applied;
    preferred batch sizes above ``max_batch_size`` are not served (Triton refuses them), so a
    combination listing one serves as the sizes it keeps."""
    values = dict(params)
    batching = values.get("max_queue_delay_us", BATCHING_OFF) != BATCHING_OFF
    if values.get("max_batch_size") == 1 and batching:
        values["max_queue_delay_us"] = 0
    if not batching:
        values = {k: v for k, v in values.items() if not k.startswith(f"{CONFIG_FIELD}dynamic_batching.")}
    preferred = f"{CONFIG_FIELD}dynamic_batching.preferred_batch_size"
    if isinstance(values.get(preferred), str) and isinstance(values.get("max_batch_size"), int):
        kept = [size for size in json.loads(values[preferred]) if size <= values["max_batch_size"]]
        values[preferred] = json.dumps(kept)
    extra = sorted((k, type(v).__name__, v) for k, v in values.items() if k not in KNOBS)
    return (*((knob, type(values.get(knob)).__name__, values.get(knob)) for knob in KNOBS), *extra)


_ENUMERATED = 200_000
"""Up to this many combinations a space's distinct configurations are counted one by one."""


def distinct_configurations(space: dict[str, list]) -> int:
    """How many configurations of a space serve differently (see ``serving_key``); beyond
    ``_ENUMERATED`` combinations, their number (an upper bound)."""
    names = list(space)
    total = 1
    for name in names:
        total *= len(space[name])
    if total > _ENUMERATED:
        return total
    return len({serving_key(dict(zip(names, values))) for values in itertools.product(*space.values())})


@dataclasses.dataclass(frozen=True)
class Level:
    """One load a measurement is taken at: ``concurrency`` requests in flight (closed loop), or
    ``request_rate`` requests/s sent on a ``constant`` or ``poisson`` schedule (open loop)."""

    concurrency: int | None = None
    request_rate: float | None = None
    arrival: str = "constant"

    def __post_init__(self) -> None:
        if (self.concurrency is None) == (self.request_rate is None):
            raise ValueError("a level is a concurrency or a request rate")

    @property
    def value(self) -> float:
        """The load as one number: requests in flight, or requests/s."""
        return self.concurrency if self.concurrency is not None else self.request_rate

    @property
    def label(self) -> str:
        """How columns name it: ``c8`` (concurrency 8) or ``r500`` (500 requests/s)."""
        return level_label(self.concurrency, self.request_rate)

    def describe(self) -> str:
        """In words: ``concurrency 8``, ``500 requests/s (poisson)``."""
        if self.concurrency is not None:
            return f"concurrency {self.concurrency}"
        return f"{self.request_rate:g} requests/s ({self.arrival})"

    def with_value(self, value: float) -> Level:
        """The same kind of load at another value."""
        if self.concurrency is not None:
            return Level(concurrency=int(value))
        return Level(request_rate=float(value), arrival=self.arrival)


@dataclasses.dataclass(frozen=True)
class SearchBounds:
    """The loads a capacity search may try (``load.capacity``) and the mode's unit for messages."""

    low: float
    high: float
    resolution: float
    integer: bool
    """Concurrency: whole numbers of requests in flight."""
    unit: str
    """``concurrency`` or ``requests/s``."""
    retakes: int = 0
    """Measurements of the load found, taken again after the search: the capacity's figure is
    the median throughput of that load's measurements (a host's disturbance of a few seconds
    moves one measurement, not the median)."""

    def describe(self, load: float) -> str:
        """A load in the mode's words: ``concurrency 8``, ``500 requests/s``."""
        return f"concurrency {load:g}" if self.unit == "concurrency" else f"{load:g} requests/s"


@dataclasses.dataclass(frozen=True)
class LoadSettings:
    """How a trial's load is measured: the spec's ``load:`` block, made once (``LoadSpec.settings``)
    and handed to the load generators."""

    levels: tuple[Level, ...]
    """The loads every trial measures, in the spec's order."""
    capacity: SearchBounds
    warmup_s: float
    window_s: float
    stability_tolerance: float
    """Windows agree when their throughput and p99 are within this fraction of each other."""
    max_windows: int
    request_timeout_s: float
    client_memory_mb: float | None = None
    """The most memory a load generator process may hold before it is stopped (None: half the
    memory the host has available when it starts)."""

    @property
    def confirmation_margin(self) -> float:
        """How close (relatively) a trial must come to the front to be measured again: half the
        stability tolerance, the noise one measurement is allowed."""
        return self.stability_tolerance / 2


@dataclasses.dataclass(frozen=True)
class InProcessTiming:
    """The reference model timed in the sweeper's own process when the study was prepared (a
    study fact): the 'local' side of the gap the report explains."""

    ms: float
    """The median of ``runs`` calls."""
    precision: str
    batch: int
    runs: int

    @property
    def label(self) -> str:
        """What the figure is, in words."""
        return f"in-process ONNX Runtime, batch {self.batch}, {self.precision} (median of {self.runs} runs)"


def level_label(concurrency: int | None, request_rate: float | None) -> str:
    """``c8`` for concurrency 8, ``r500`` for 500 requests/s: the two never read alike."""
    return f"c{concurrency}" if concurrency is not None else f"r{request_rate:g}"


def metric_column(metric: str, level: str) -> str:
    """A measured metric's column name: ``<metric>@<level>`` (``p50_ms@c1``, ``p99_ms@r500``)."""
    return f"{metric}@{level}"


def capacity_column(percentile: str, budget_ms: float) -> str:
    """A capacity's column name: ``capacity@p99_ms<=20``."""
    return f"{CAPACITY}@{percentile}<={budget_ms:g}"


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_COLUMN = rf"(?:{CAPACITY}@p\d+_ms<={_NUMBER}|[A-Za-z_][\w]*(?:@(?:c\d+|r{_NUMBER}))?)"
COLUMN_PATTERN = _COLUMN
"""A metric column as a regular expression (for parsers of command-line conditions)."""
NUMBER_PATTERN = _NUMBER
_BOUND = re.compile(rf"^\s*({_COLUMN})\s*(<=|>=)\s*({_NUMBER})\s*$")


def is_metric(column: str) -> bool:
    """Whether a table column holds a measured metric: a level's (``p50_ms@c1``,
    ``p99_ms@r500``), a capacity (``capacity@p99_ms<=20``) or a trial's (``server_memory_mb``)."""
    return re.fullmatch(_COLUMN, column) is not None and ("@" in column or column in TRIAL_METRICS)


_OBJECTIVE = re.compile(rf"^\s*(min|max|minimize|maximize)\s*:\s*({_COLUMN})\s*$")
_TRIAL_METRIC_WORDS = {"server_memory_mb": "server memory", "gpu_memory_mb": "GPU memory"}
_CAPACITY_COLUMN = re.compile(rf"{CAPACITY}@(p\d+)_ms<=({_NUMBER})")


def is_capacity(column: str) -> bool:
    """Whether ``column`` is a capacity (``capacity@p99_ms<=20``)."""
    return _CAPACITY_COLUMN.fullmatch(column) is not None


def parse_capacity_column(column: str) -> tuple[str, float]:
    """``capacity@p99_ms<=20`` -> (``p99_ms``, 20.0); ValueError for another column."""
    match = _CAPACITY_COLUMN.fullmatch(column)
    if match is None:
        raise ValueError(f"'{column[:100]}' is not a capacity column (capacity@<percentile><=<budget>)")
    return f"{match.group(1)}_ms", float(match.group(2))


def metric_words(column: str, *, unit: bool = True) -> str:
    """A metric column in words, with its unit: ``capacity at p99 <= 60 ms (inferences/s)``,
    ``p50 latency at concurrency 1 (ms)``, ``server memory (MB)``; other columns as they are."""
    capacity = _CAPACITY_COLUMN.fullmatch(column)
    if capacity is not None:
        words, measure = f"capacity at {capacity.group(1)} <= {capacity.group(2)} ms", "inferences/s"
    elif column in _TRIAL_METRIC_WORDS:
        words, measure = _TRIAL_METRIC_WORDS[column], "MB"
    else:
        level = re.fullmatch(r"(p\d+)_ms@(c\d+|r.+)|(throughput)@(c\d+|r.+)", column)
        if level is None:
            return column
        name, at = (f"{level.group(1)} latency", level.group(2)) if level.group(1) else ("throughput", level.group(4))
        load = f"concurrency {at[1:]}" if at.startswith("c") else f"{at[1:]} requests/s"
        words, measure = f"{name} at {load}", "ms" if level.group(1) else "inferences/s"
    return f"{words} ({measure})" if unit else words


@dataclasses.dataclass(frozen=True)
class Objective:
    """A column to minimize or maximize."""

    column: str
    direction: str
    """``minimize`` or ``maximize``."""

    @classmethod
    def parse(cls, text: str) -> Objective:
        """``min:p50_ms@c1``, ``max:throughput@c8``, ``min:server_memory_mb``; ValueError otherwise."""
        match = _OBJECTIVE.match(text)
        if match is None:
            raise ValueError(f"'{text[:100]}': expected min:<metric@cN> or max:<metric@cN>")
        return cls(match.group(2), "minimize" if match.group(1).startswith("min") else "maximize")


@dataclasses.dataclass(frozen=True)
class Bound:
    """A constraint on a column: ``column <= value`` or ``column >= value``."""

    column: str
    op: str
    value: float

    @property
    def label(self) -> str:
        """The constraint's name: ``p99_ms@c1<=50``."""
        return f"{self.column}{self.op}{self.value:g}"

    def excess(self, measured: float) -> float:
        """How far ``measured`` is outside the bound (<= 0: it holds), as Optuna's constraints."""
        return measured - self.value if self.op == "<=" else self.value - measured

    @classmethod
    def parse(cls, text: str) -> Bound:
        """``p99_ms@c1 <= 50`` (or ``>=``); ValueError otherwise."""
        match = _BOUND.match(text)
        if match is None:
            raise ValueError(f"'{text[:100]}': expected '<metric@cN> <= X' or '<metric@cN> >= X'")
        return cls(match.group(1), match.group(2), float(match.group(3)))


@dataclasses.dataclass(frozen=True)
class Ranking:
    """How trials are ranked: the objectives of the front and the bounds a feasible trial keeps."""

    objectives: tuple[Objective, ...]
    constraints: tuple[Bound, ...] = ()
    primary: str | None = None
    """The objective that decides the pick first (``objectives[].primary`` in the spec), if any."""

    @property
    def columns(self) -> list[str]:
        """The objectives' columns, in order."""
        return [o.column for o in self.objectives]

    @property
    def directions(self) -> list[str]:
        """The objectives' directions, in order."""
        return [o.direction for o in self.objectives]


def delay_label(delay: Delay) -> str:
    """``off`` (no dynamic batching) or the delay with its unit (``0us``, ``500us``)."""
    return str(delay) if delay == BATCHING_OFF else f"{delay}us"


def knob_label(knobs: Any) -> str:
    """A configuration on one line: ``mbs=8 delay=500us x1 grpc fp16``, then each swept field and
    option that is set (``preferred_batch_size=[4, 8] buffer-manager-thread-count=4``), by its last
    name. ``knobs``: a TrialConfig, a mapping or a table row."""
    values = knobs.as_dict() if isinstance(knobs, TrialConfig) else dict(knobs)
    label = (
        f"mbs={values['max_batch_size']} delay={delay_label(values['max_queue_delay_us'])} "
        f"x{values['instance_count']} {values['protocol']} {values['precision']}"
    )
    for name, value in values.items():
        if name.startswith((CONFIG_FIELD, SERVER_OPTION)) and value is not None and value == value:  # NaN: unset
            label += f" {re.split(r'[.]', name)[-1]}={value}"
    return label


def compute_ms(row: Any) -> float:
    """Triton's compute time (input + infer + output) of a measurement row or mapping."""
    return float(sum(row[part] for part in COMPUTE_PARTS))
