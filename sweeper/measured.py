"""What a trial measured, as plain data: each load's measurement, each capacity found, the
trial's timings, accuracy and memory, and what measured it. ``sweeper.record`` stores them on
the study and reads them back; every stage passes them around as they are.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sweeper.vocabulary import METRICS, level_label, metric_column


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One load level of one trial. Times in milliseconds, throughput in inferences/s.

    The level is a ``concurrency`` (closed loop) or a ``request_rate`` (open loop: requests/s on
    a schedule, latency counted from each request's scheduled send, ``send_rate`` what was sent
    and ``behind_schedule`` when the generator could not keep up). ``search`` names the capacity
    search (its column) that chose this load; None for a level the spec lists."""

    concurrency: int | None
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    throughput: float
    queue_ms: float
    compute_input_ms: float
    compute_infer_ms: float
    compute_output_ms: float
    server_ms: float
    avg_batch_size: float
    requests: int
    windows: int
    stable: bool
    client_cpu: float
    client_bound: bool
    generator: str
    request_rate: float | None = None
    arrival: str | None = None
    send_rate: float | None = None
    behind_schedule: bool = False
    search: str | None = None
    intervals: dict[str, list[float | None]] | None = None
    """Each percentile's 95 % interval from the order statistics of its samples (``p99_ms`` ->
    [low, high], None for a side the samples do not bound: ``sweeper.load._tail``); None where
    the generator reports percentiles without its samples."""
    verdict: str | None = None
    """A load a capacity search judged: ``within`` or ``over`` the budget by its whole interval,
    or ``... by its point estimate`` where the interval still straddled the budget (or there was
    none) after the most samples a load gets."""
    remeasured: str | None = None
    """Why this measurement was taken again before it could decide a capacity (it is kept; the
    one taken after it decides)."""
    retake: int | None = None
    """1, 2, ...: a measurement of the load a capacity search found, taken again after the search
    (``load.capacity.retakes``); the capacity is the median throughput of the search's
    measurement and its retakes. None: a measurement the search or the spec's levels took."""
    note: str | None = None
    """How this load was measured where it differs from the trial's other loads (perf_analyzer
    stopped at its memory limit: the built-in client measured it)."""
    response_bytes: int | None = None
    """The bytes of output tensors one response carries (what the client reads per request)."""
    response_mb_s: float | None = None
    """Output bytes the client read per second at this load (MiB/s: ``response_bytes`` times
    the requests served per second)."""

    @property
    def level(self) -> str:
        """The level's label in column names: ``c8``, ``r500``."""
        return level_label(self.concurrency, self.request_rate)

    @property
    def load(self) -> float:
        """The load as one number: requests in flight, or requests/s (as a Capacity's ``load``)."""
        return self.concurrency if self.concurrency is not None else self.request_rate

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, as stored on the trial."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> Measurement:
        """A stored measurement (keys it does not know are a newer layout's: ignored; those an
        older layout lacks take their defaults)."""
        return cls(
            **{
                field.name: stored.get(field.name)
                for field in dataclasses.fields(cls)
                if field.name in stored or field.default is dataclasses.MISSING
            }
        )


MEASUREMENT_FIELDS = tuple(field.name for field in dataclasses.fields(Measurement))


@dataclasses.dataclass(frozen=True)
class Capacity:
    """What a capacity search found: the highest load whose latency percentile stayed within the
    budget, and the throughput measured there (0 and 0 when even the lowest load broke it)."""

    column: str
    """``capacity@p99_ms<=20``."""
    load: float
    """The highest load within the budget (concurrency, or requests/s); 0: none."""
    throughput: float
    """Inferences/s at that load: the capacity's figure."""
    tried: tuple[float, ...]
    """Every load the search measured, in the order it did."""
    note: str | None = None
    """Why the capacity is 0, or that the search reached its upper bound (at least this much)."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, as stored on the trial."""
        return {**dataclasses.asdict(self), "tried": list(self.tried)}

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> Capacity:
        """A stored capacity."""
        return cls(**{**stored, "tried": tuple(stored.get("tried", ()))})


def figures_of(
    measurements: tuple[Measurement, ...] | list[Measurement],
    memory: Memory,
    capacities: tuple[Capacity, ...] | list[Capacity] = (),
) -> dict[str, float]:
    """Every metric of a trial by column name: each listed level's (``p50_ms@c1``), each
    capacity (``capacity@p99_ms<=20``) and the trial's memory (``server_memory_mb``). The
    loads a capacity search chose are rows of measurements.csv, not columns."""
    levels = {
        metric_column(metric, m.level): getattr(m, metric)
        for m in measurements
        if m.search is None
        for metric in METRICS
    }
    return {**levels, **{c.column: c.throughput for c in capacities}, **memory.figures()}


@dataclasses.dataclass(frozen=True)
class Timings:
    """Seconds a trial spent building, starting, measuring and stopping (None: not reached)."""

    build_s: float | None = None
    start_s: float | None = None
    measure_s: float | None = None
    stop_s: float | None = None


TIMINGS = tuple(field.name for field in dataclasses.fields(Timings))


@dataclasses.dataclass(frozen=True)
class Accuracy:
    """The trial's precision against the reference model on the sweep's samples."""

    max_abs_error: float
    cosine_similarity: float
    outside_tolerance: str | None = None
    """Why it is outside the spec's tolerance, or None."""
    top1_agreement: float | None = None
    """The share of score vectors whose highest entry is the reference's (``artifacts.Drift``)."""


@dataclasses.dataclass(frozen=True)
class Memory:
    """Peak memory over a trial's measurement, in MiB (None: not measurable there, e.g. no GPU)."""

    server_mb: float | None = None
    gpu_mb: float | None = None

    def figures(self) -> dict[str, float]:
        """The trial metrics it holds, by column name."""
        found = {"server_memory_mb": self.server_mb, "gpu_memory_mb": self.gpu_mb}
        return {name: value for name, value in found.items() if value is not None}


@dataclasses.dataclass(frozen=True)
class LoadGeneratorInfo:
    """What measured a trial."""

    name: str
    version: str | None = None
