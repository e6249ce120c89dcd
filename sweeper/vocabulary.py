"""The trial vocabulary every stage speaks: the five knobs, the metrics and their column names.

A leaf module: it imports nothing from the package, so spec, config, load, study, results,
report and export can all share it without cycles.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Union

KNOBS = ("max_batch_size", "max_queue_delay_us", "instance_count", "protocol", "precision")
"""The five knobs, in the order tables and labels show them."""

METRICS = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "throughput")
"""Metrics an objective or constraint can name (latencies in ms, throughput in inferences/s)."""

PROTOCOLS = ("http", "grpc")

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


def metric_column(metric: str, concurrency: int) -> str:
    """A measured metric's column name: ``<metric>@c<concurrency>`` (``p50_ms@c1``)."""
    return f"{metric}@c{concurrency}"


def metric_values(measurements: list[dict[str, Any]]) -> dict[str, float]:
    """Every metric of stored measurements (one dict per concurrency level) by column name."""
    return {metric_column(metric, m["concurrency"]): m[metric] for m in measurements for metric in METRICS}


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
