"""The load-generator interface: what a trial sends (``Workload``), one ``LoadGenerator`` per way
of sending it, and what Triton's own statistics say about the same span."""

from __future__ import annotations

import abc
import dataclasses
import functools
from typing import Any, ClassVar

import numpy as np

from sweeper.data import Samples
from sweeper.errors import TrialError
from sweeper.launchers import Endpoints, server_statistics
from sweeper.load._client import describe_failure, send_once
from sweeper.load._wire import InferenceError, check_outputs, grpc_message, http_request
from sweeper.record import LoadGeneratorInfo, Measurement
from sweeper.tensors import TensorSpec


@dataclasses.dataclass(frozen=True)
class Workload:
    """What a trial sends: the model's tensors and the sweep's samples, ``batch_size`` a request
    (``batched`` False: a model without a batch axis, one sample a request)."""

    model_name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    samples: Samples
    batch_size: int
    batched: bool

    @functools.cached_property
    def tensors(self) -> list[dict[str, np.ndarray]]:
        """Every distinct request, in the order the generators cycle through them."""
        return self.samples.requests(self.batch_size, batched=self.batched)

    def encoded(self, protocol: str, endpoints: Endpoints) -> list[bytes]:
        """The requests in ``protocol``'s wire format, for the built-in generator."""
        names = [t.name for t in self.outputs]
        if protocol == "grpc":
            return [grpc_message(self.model_name, list(self.inputs), t, names) for t in self.tensors]
        return [http_request(self.model_name, list(self.inputs), t, names, endpoints.http) for t in self.tensors]


class LoadGenerator(abc.ABC):
    """A way of driving closed-loop load at one concurrency level and measuring it.

    ``measure`` checks one response against the model's declared outputs first (an empty or
    mis-shaped output fails the trial instead of producing fast-looking numbers), then hands the
    level to the implementation."""

    name: ClassVar[str]

    @property
    @abc.abstractmethod
    def info(self) -> LoadGeneratorInfo:
        """The generator's name and version, as trial records keep them."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Where it comes from, for the run's header (``perf_analyzer (.venv/bin/perf_analyzer)``)."""

    @abc.abstractmethod
    def measure_level(
        self,
        endpoints: Endpoints,
        protocol: str,
        workload: Workload,
        requests: list[bytes],
        concurrency: int,
        load: Any,
    ) -> Measurement:
        """Warm up, then measure ``concurrency`` requests in flight under the spec's ``load``
        settings; raise TrialError when a request fails."""

    def measure(
        self, endpoints: Endpoints, protocol: str, workload: Workload, concurrency: int, load: Any
    ) -> Measurement:
        """Measure one concurrency level (``load`` is the spec's ``load:`` block)."""
        requests = workload.encoded(protocol, endpoints)
        check_first_response(protocol, endpoints, workload, requests[0], load.request_timeout_s)
        return self.measure_level(endpoints, protocol, workload, requests, concurrency, load)


def check_first_response(
    protocol: str, endpoints: Endpoints, workload: Workload, request: bytes, timeout_s: float
) -> None:
    """One request on its own: TrialError unless its outputs are the model's declared ones."""
    try:
        found = send_once(protocol, endpoints, request, timeout_s)
        check_outputs(found, list(workload.outputs), workload.batch_size if workload.batched else None)
    except InferenceError as exc:
        raise TrialError(f"the first {protocol} response is wrong: {exc}") from None
    except (OSError, ConnectionError) as exc:
        raise TrialError(f"the first {protocol} request failed: {describe_failure(exc, timeout_s)}") from None


def statistics_of(endpoints: Endpoints, workload: Workload) -> dict[str, Any]:
    """The served model's cumulative statistics now."""
    return server_statistics(endpoints, workload.model_name)


_SERVER_PARTS = ("queue", "compute_input", "compute_infer", "compute_output", "success")


def server_times(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """Per-request averages (ms) of Triton's cumulative statistics between two snapshots, and
    the average batch size (inferences per model execution)."""

    def delta(part: str, key: str) -> float:
        return float(after["inference_stats"][part][key]) - float(before["inference_stats"][part][key])

    times = {}
    for part in _SERVER_PARTS:
        count = delta(part, "count")
        times["server_ms" if part == "success" else f"{part}_ms"] = delta(part, "ns") / count / 1e6 if count else 0.0
    times["avg_batch_size"] = batch_average(before, after)
    return times


def batch_average(before: dict[str, Any], after: dict[str, Any]) -> float:
    """Inferences per model execution between two statistics snapshots, from the executions
    counted by batch size: Triton counts each size with its execution, so a snapshot never sees
    an inference before its execution (the total counts can skew by one)."""
    executions = {b["batch_size"]: b["compute_infer"]["count"] for b in after.get("batch_stats", [])}
    for earlier in before.get("batch_stats", []):
        executions[earlier["batch_size"]] = executions.get(earlier["batch_size"], 0) - earlier["compute_infer"]["count"]
    count = sum(executions.values())
    return sum(size * n for size, n in executions.items()) / count if count else 0.0
