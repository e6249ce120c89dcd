"""The trial vocabulary every stage speaks: the five knobs, the metrics and their column names.

A leaf module: it imports nothing from the package, so spec, config, load, study, results,
report and export can all share it without cycles.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Literal, Union

KNOBS = ("max_batch_size", "max_queue_delay_us", "instance_count", "protocol", "precision")
"""The five knobs, in the order tables and labels show them."""

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


@dataclasses.dataclass(frozen=True)
class TrialConfig:
    """One point of the search space: the five knobs of a trial."""

    max_batch_size: int
    max_queue_delay_us: Delay
    instance_count: int
    protocol: str
    precision: str

    @property
    def dynamic_batching(self) -> bool:
        """Whether config.pbtxt has a ``dynamic_batching`` block."""
        return self.max_queue_delay_us != BATCHING_OFF

    def as_dict(self) -> dict[str, Any]:
        """The knobs by name, as Optuna stores them as parameters."""
        return dataclasses.asdict(self)


def serving_key(knobs: dict[str, Any]) -> tuple:
    """A configuration as a hashable key of how it serves: ``off`` and 0 stay distinct, and with
    ``max_batch_size`` 1 every queue delay serves alike (a batch of one is full at once, so the
    batcher never waits): they are one configuration, ``off`` another."""
    values = dict(knobs)
    if values.get("max_batch_size") == 1 and values.get("max_queue_delay_us", BATCHING_OFF) != BATCHING_OFF:
        values["max_queue_delay_us"] = 0
    return tuple((knob, type(values.get(knob)).__name__, values.get(knob)) for knob in KNOBS)


def distinct_configurations(space: dict[str, list]) -> int:
    """How many configurations of a space serve differently (see ``serving_key``)."""
    delays = space["max_queue_delay_us"]
    batched = [d for d in delays if d != BATCHING_OFF]
    per_size = sum(
        len(delays) if size != 1 else (len(delays) - len(batched)) + min(1, len(batched))
        for size in space["max_batch_size"]
    )
    others = 1
    for knob in KNOBS:
        if knob not in ("max_batch_size", "max_queue_delay_us"):
            others *= len(space[knob])
    return per_size * others


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


def knob_label(knobs: dict[str, Any] | TrialConfig) -> str:
    """The five knobs on one line: ``mbs=8 delay=500us x1 grpc fp16``."""
    values = knobs.as_dict() if isinstance(knobs, TrialConfig) else knobs
    return (
        f"mbs={values['max_batch_size']} delay={delay_label(values['max_queue_delay_us'])} "
        f"x{values['instance_count']} {values['protocol']} {values['precision']}"
    )


def compute_ms(row: Any) -> float:
    """Triton's compute time (input + infer + output) of a measurement row or mapping."""
    return float(sum(row[part] for part in COMPUTE_PARTS))
